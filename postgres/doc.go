// Package postgres runs cartreg's embedded default database: a private PostgreSQL cluster
// under the data directory, started from the machine's own server binaries as a child of the
// cartreg process and reachable only through a Unix socket.
//
// Ownership is what makes it safe. An exclusive flock on the cluster directory says which
// process owns the cluster; the kernel releases it when that process dies, however it dies.
// So a starting cartreg that gets the lock knows that any postgres still running on the data
// directory, or any postmaster.pid, is left over, and clears it. Linux's parent-death signal
// normally spares it even that: a killed cartreg's postgres receives SIGINT and shuts down
// cleanly by itself.
package postgres
