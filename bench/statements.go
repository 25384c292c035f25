package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// resetStatements empties pg_stat_statements before a phase, when -statements asks for them.
// The server's PostgreSQL must load the module (shared_preload_libraries); the embedded
// database does not by default, as its overhead would be in every other figure.
func resetStatements(ctx context.Context, db *pgxpool.Pool, n int) error {
	if n == 0 {
		return nil
	}
	if _, err := db.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		return fmt.Errorf("-statements: %w", err)
	}
	if _, err := db.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return fmt.Errorf("-statements: is pg_stat_statements in shared_preload_libraries? %w", err)
	}
	return nil
}

// printStatements prints the phase's n statements with the most execution time, and each
// one's time per operation of the phase (ops of what), so phases of different sizes compare.
func printStatements(ctx context.Context, db *pgxpool.Pool, n int, phase string, ops int, what string) error {
	if n == 0 || ops == 0 {
		return nil
	}
	rows, err := db.Query(ctx, `SELECT calls, total_exec_time, total_plan_time, rows, query,
			sum(total_exec_time + total_plan_time) OVER ()
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_exec_time + total_plan_time DESC LIMIT $1`, n)
	if err != nil {
		return fmt.Errorf("-statements: %w", err)
	}
	defer rows.Close()
	fmt.Printf("\n%s: the %d statements with the most time (execution + planning), per %s of %d\n", phase, n, what, ops)
	fmt.Printf("%8s %9s %9s %7s %7s  %s\n", "calls/op", "ms/op", "plan ms", "rows", "share", "statement")
	for rows.Next() {
		var calls, nrows int64
		var exec, plan, all float64
		var query string
		if err := rows.Scan(&calls, &exec, &plan, &nrows, &query, &all); err != nil {
			return err
		}
		query = strings.Join(strings.Fields(query), " ")
		if len(query) > 110 {
			query = query[:110] + "…"
		}
		fmt.Printf("%8.2f %9.4f %9.4f %7d %6.1f%%  %s\n", float64(calls)/float64(ops), (exec+plan)/float64(ops),
			plan/float64(ops), nrows, 100*(exec+plan)/all, query)
	}
	return rows.Err()
}
