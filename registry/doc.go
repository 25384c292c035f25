// Package registry will hold what makes cartreg a CAR-T registry rather than a generic FHIR
// server: the projection of infusions, remission assessments, toxicities and vital status that
// FHIR writes keep up to date in the same transaction, the follow-up plan's timepoints, and
// the aggregate outcome queries (response rates, Kaplan-Meier survival) researchers run.
//
// Nothing is implemented here yet; it arrives with the registry issue.
package registry
