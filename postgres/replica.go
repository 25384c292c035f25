package postgres

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// copyPrimary makes scratch a base backup of the running Primary, set up to follow it (-R
// writes standby.signal and primary_conninfo), and moves it into place. Both clusters are
// reached through their private sockets, where initdb's pg_hba.conf trusts local replication
// connections of the superuser.
func (c *Cluster) copyPrimary(ctx context.Context, scratch string) error {
	if c.Primary.socketDir == "" {
		return fmt.Errorf("the primary of standby %s is not running", c.Dir)
	}
	c.Logger.Info("copying the primary for a new standby (first start)", "dir", c.dataDir(), "primary", c.Primary.Dir)
	out, err := c.command(ctx, "pg_basebackup",
		"--pgdata", scratch,
		"--host", c.Primary.socketDir,
		"--username", Superuser,
		"--wal-method", "stream",
		"--checkpoint", "fast",
		"--write-recovery-conf",
		"--no-password",
	).CombinedOutput()
	if err != nil {
		return c.accessHint(fmt.Errorf("pg_basebackup failed: %w\n%s", err, strings.TrimSpace(string(out))))
	}
	_ = os.Remove(c.dataDir())
	if err := os.Rename(scratch, c.dataDir()); err != nil {
		return fmt.Errorf("moving the new standby into place: %w", err)
	}
	return nil
}
