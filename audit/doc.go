// Package audit is cartreg's audit trail: one record for every request that reads or writes
// patient data, saying who (the client or user, and the role it acted under), what (the
// resources touched, or the query), with what outcome, from which address, under which request
// id. A privacy officer searches it as FHIR AuditEvents at /fhir/AuditEvent and can check that
// nobody has edited it.
//
// # Writing
//
// A write records its event with Record, inside the write's own transaction: the record
// commits or rolls back with the data, so there is never a change without its record nor a
// record of a change that did not happen. A read cannot afford an extra round trip, so it
// hands its event to Log, which queues it for a background writer that inserts batches with
// COPY at most FlushInterval (50 ms) after an event arrives. The queue is bounded and Log
// blocks when it is full: back-pressure slows requests down rather than lose a record. Close
// writes what is queued; a Log after Close inserts its event itself.
//
// Nothing stored holds an access token or a request body: the query string is kept, because
// it is what was searched, with any access_token parameter taken out.
//
// # The hash chain, without one lock around every write
//
// Chaining each row to the previous one as it is inserted would need one global lock held to
// the end of every transaction that writes patient data: all writes would queue behind each
// other. Instead a row is inserted on its own, unsealed, with two things: the SHA-256 of a
// canonical encoding of its event (every field, in a fixed order, each length-prefixed; see
// contentHash) and the id of the inserting transaction (pg_current_xact_id()).
//
// Seal, run periodically (SealJob) on any number of replicas, chains them. Under a
// transaction-level advisory lock, so one replica at a time, it reads the horizon
// pg_snapshot_xmin(pg_current_snapshot()): every transaction with a smaller id has finished,
// committed or rolled back. It takes the unsealed rows inserted below the horizon, in
// (transaction id, row id) order, and gives each the next chain_seq and
// chain_hash = SHA-256(previous chain_hash || content hash). A transaction held open keeps the
// horizon at itself, so rows committed after it wait until it ends and its own rows are chained
// before theirs: the chain never passes a row that might still appear behind it.
// The horizon is the whole PostgreSQL cluster's: a transaction left open in any database
// delays sealing (never writing) until it ends.
//
// Verify recomputes every content hash from the stored event, checks that the searchable
// columns agree with it, that chain_seq runs without gaps from the anchor, and that every
// chained hash follows from the one before; it reports the first bad sequence number and why:
// an edited field, a deleted row in the middle, rows reordered. Unsealed rows are counted and
// their content hashes checked. A trigger refuses ordinary UPDATEs and DELETEs as a guard
// against mistakes; the chain is what catches someone who gets past it.
//
// The chain proves that rows were not changed after sealing; an administrator who rewrites
// the whole chain, or cuts off its end, is caught only by comparing with a head kept
// elsewhere. Verify's report gives the head (LastSeq, LastHash) for that purpose.
//
// # Retention
//
// Prune deletes sealed events older than the retention period (Config.Retention, six years by
// default: HIPAA's retention period for the documentation it requires, 45 CFR
// 164.316(b)(2)(i)). It deletes only a prefix of the chain and keeps the last deleted
// row's sequence number and chained hash as an anchor (table audit_anchor), where Verify
// starts, so what remains stays verifiable.
//
// # Reading
//
// Register serves GET /fhir/AuditEvent and GET /fhir/AuditEvent/{id} behind a guard the
// caller supplies. Each event is rendered as an R4 AuditEvent: type audit-event-type#rest (or
// DICOM User Authentication for a login), subtype the restful-interaction code, outcome 0, 4
// or 8 from the HTTP status, the requesting agent with its identifier, role and address, this
// server as the observer (Device/cartreg, an Application Server), one entity per reference
// touched, a query entity carrying the query string in base64, and the request id in an
// extension. Search takes date (eq, ge, gt, le, lt), agent or who, entity, patient, action,
// outcome, subtype, _count (50 by default, 1,000 at most), _sort (-date by default, or date)
// and _total=accurate; pages are keyset cursors in the next link. Any other parameter is a 400,
// since ignoring a filter would show more than was asked for while seeming not to.
package audit
