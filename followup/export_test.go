package followup

// SetChunk makes s's runs handle n infusions a transaction, so that a test's small cohort
// spans several chunks.
func SetChunk(s *Tracker, n int) { s.chunk = n }
