// Package bulk is FHIR Bulk Data Access (v2) $export: a client asks for a whole server's data
// (GET /fhir/$export), every patient's (/fhir/Patient/$export) or a Group's
// (/fhir/Group/{id}/$export), gets 202 and a status URL, polls it until a manifest lists the
// NDJSON files, downloads them, and deletes the job.
//
// # Jobs
//
// A job is a row in PostgreSQL (bulk_export_job) with what was asked (types, _since,
// _typeFilter, a Group's members as they were at kick-off) and who asked. Any replica's
// worker may run it: it takes a session advisory lock on the job's id with
// pg_try_advisory_lock on a connection it keeps for the job, so one replica runs each job at
// a time, and a replica that dies (its connection with it) frees the job at once for another,
// or for itself after a restart.
//
// Each resource type is one file, written page by page in id order. After each page is on
// disk (fsync), the file's row records the last id, the line count and the file's length. A
// worker that takes the job up again cuts each unfinished file back to its recorded length
// (dropping a page that was written but not recorded) and continues after the recorded id,
// so an export interrupted at any point ends complete and without duplicates.
//
// Every resource is exported as its version current at the job's transactionTime (the
// manifest's), read from the version history: a job that resumes an hour later exports what a
// job that never stopped would have. Group membership is fixed at kick-off; _typeFilter and
// Patient compartment membership are evaluated on the current search indexes when each page
// is read.
//
// # Files
//
// Files live under Config.Dir/<job id>/, are streamed from disk (gzip when the client accepts
// it), and are served only to the principal that started the job, or an administrator.
// Several replicas need Config.Dir on storage they share. Completed jobs and their files
// expire Config.Retention after they finish (a sweep, Exporter.Sweep, deletes them); a
// DELETE of the status URL removes them at once, and stops the job if it is running.
package bulk
