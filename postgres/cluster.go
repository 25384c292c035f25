package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Names inside a private cluster. The superuser is cartreg's own; nobody else can reach the
// socket, so it authenticates by trust.
const (
	Superuser       = "cartreg"
	DefaultDatabase = "cartreg"
)

// Cluster is a private PostgreSQL cluster that cartreg runs as its own child process: one data
// directory, reachable only through a Unix socket in a directory nobody else can enter, so it
// never collides with another server's TCP port.
//
// Layout below Dir: data/ (PGDATA), run/ (the socket), postgres.log, cluster.lock.
type Cluster struct {
	Dir      string
	Binaries Binaries
	// RunAs is the operating-system user that runs initdb and postgres when cartreg itself runs
	// as root, because PostgreSQL refuses to run as root. Ignored otherwise.
	RunAs string
	// Settings are extra server settings, passed as -c name=value.
	Settings map[string]string
	Logger   *slog.Logger
	// Primary, when set, makes this cluster a hot standby of that running cluster: its first
	// start copies the primary with pg_basebackup instead of running initdb, and it then
	// follows the primary by streaming replication, answering read-only queries.
	Primary *Cluster

	lock      *os.File
	logFile   *os.File
	process   *os.Process
	exited    chan struct{}
	exitErr   error
	socketDir string
	cred      *syscall.Credential
}

func (c *Cluster) dataDir() string { return filepath.Join(c.Dir, "data") }
func (c *Cluster) logPath() string { return filepath.Join(c.Dir, "postgres.log") }

// Start initialises the cluster on first use, recovers from a previous owner that died without
// stopping it, starts postgres and waits until it accepts connections and DefaultDatabase
// exists. It fails if another process already owns the cluster.
func (c *Cluster) Start(ctx context.Context) (err error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return fmt.Errorf("resolving cluster directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating cluster directory: %w", err)
	}
	// Resolved, because it is compared with a postmaster's working directory from /proc.
	if c.Dir, err = filepath.EvalSymlinks(dir); err != nil {
		return fmt.Errorf("resolving cluster directory: %w", err)
	}
	if err := c.acquireLock(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.release()
		}
	}()
	if c.cred, err = credentialFor(c.RunAs); err != nil {
		return err
	}
	if err := c.initIfNeeded(ctx); err != nil {
		return err
	}
	if err := c.clearPreviousOwner(); err != nil {
		return err
	}
	if err := c.prepareSocketDir(); err != nil {
		return err
	}
	if err := c.spawn(); err != nil {
		return err
	}
	if err := c.waitReady(ctx); err != nil {
		_ = c.Stop(10 * time.Second)
		return err
	}
	if c.Primary == nil { // a standby has the primary's databases and cannot create any
		if err := c.ensureDatabase(ctx, DefaultDatabase); err != nil {
			_ = c.Stop(10 * time.Second)
			return err
		}
	}
	c.Logger.Info("embedded PostgreSQL ready", "dir", c.Dir, "version", c.Binaries.Major, "socket", c.socketDir)
	return nil
}

// ErrInUse is Start's error when another process owns the cluster.
var ErrInUse = errors.New("embedded database in use")

// SharedURL is the connection URL of database in a cluster another process owns and runs
// (a `cartreg serve`), for a short-lived command to work on it as a client. It does not start
// or stop anything.
func (c *Cluster) SharedURL(database string) (string, error) {
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return "", err
	}
	if c.Dir, err = filepath.EvalSymlinks(dir); err != nil {
		return "", err
	}
	c.socketDir = c.socketPath()
	if _, err := os.Stat(filepath.Join(c.socketDir, ".s.PGSQL.5432")); err != nil {
		return "", fmt.Errorf("the embedded database in %s is owned by another process but not accepting connections yet", c.Dir)
	}
	return c.URL(database), nil
}

// URL is the connection URL of database in this cluster.
func (c *Cluster) URL(database string) string {
	u := url.URL{Scheme: "postgres", User: url.User(Superuser), Path: "/" + database}
	u.RawQuery = url.Values{"host": {c.socketDir}, "sslmode": {"disable"}}.Encode()
	return u.String()
}

// Done is closed when the postgres process has exited, for whatever reason.
func (c *Cluster) Done() <-chan struct{} { return c.exited }

// Stop shuts postgres down ("fast": open sessions are rolled back and a checkpoint is written,
// so the next start needs no recovery), escalating to an immediate shutdown after timeout.
func (c *Cluster) Stop(timeout time.Duration) error {
	defer c.release()
	if c.process == nil {
		return nil
	}
	steps := []struct {
		signal syscall.Signal
		wait   time.Duration
	}{{syscall.SIGINT, timeout}, {syscall.SIGQUIT, 5 * time.Second}, {syscall.SIGKILL, 5 * time.Second}}
	for _, step := range steps {
		if err := c.process.Signal(step.signal); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signalling postgres: %w", err)
		}
		select {
		case <-c.exited:
			c.Logger.Info("embedded PostgreSQL stopped", "signal", step.signal.String())
			return nil
		case <-time.After(step.wait):
			c.Logger.Warn("embedded PostgreSQL did not stop in time", "signal", step.signal.String(), "waited", step.wait)
		}
	}
	return errors.New("postgres did not exit even after SIGKILL")
}

func (c *Cluster) release() {
	if c.logFile != nil {
		c.logFile.Close()
		c.logFile = nil
	}
	if c.lock != nil {
		c.lock.Close() // closing the descriptor drops the flock
		c.lock = nil
	}
}

// acquireLock takes an exclusive flock on the cluster directory. The kernel drops it when the
// holder dies, even by SIGKILL, so holding it proves that anything else found running on this
// data directory is left over from a dead owner.
func (c *Cluster) acquireLock() error {
	f, err := os.OpenFile(filepath.Join(c.Dir, "cluster.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("opening cluster lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(f)
		f.Close()
		return fmt.Errorf("%w: the database in %s is in use by another cartreg process (pid %s)",
			ErrInUse, c.Dir, strings.TrimSpace(string(holder)))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	c.lock = f
	return nil
}

// credentialFor returns the identity child processes must take, or nil to keep ours.
func credentialFor(runAs string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if runAs == "" {
		return nil, errors.New("running as root: PostgreSQL refuses to run as root, so name an unprivileged user for it (CARTREG_PG_USER)")
	}
	u, err := user.Lookup(runAs)
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as user %q, but: %w (create the user, or set CARTREG_PG_USER)", runAs, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// mkdirOwned creates dir (mode 0700) for the user that runs postgres.
func (c *Cluster) mkdirOwned(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	if c.cred != nil {
		return os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid))
	}
	return nil
}

func (c *Cluster) command(ctx context.Context, program string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Binaries.path(program), args...)
	cmd.Dir = "/" // the caller's working directory may be closed to the postgres user
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = childAttributes(c.cred)
	return cmd
}

// cleanEnv drops libpq variables, which would otherwise steer initdb and postgres elsewhere.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// initIfNeeded runs initdb on first start. It initialises a scratch directory and renames it
// into place, so an interrupted initdb never leaves a half-made cluster behind.
func (c *Cluster) initIfNeeded(ctx context.Context) error {
	versionFile := filepath.Join(c.dataDir(), "PG_VERSION")
	if raw, err := os.ReadFile(versionFile); err == nil {
		major, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
		if major != c.Binaries.Major {
			return fmt.Errorf("the database in %s was made by PostgreSQL %d but the server binaries found are version %d (%s): "+
				"set CARTREG_PG_BIN_DIR to PostgreSQL %d's bin directory, or move %s away to start afresh",
				c.Dir, major, c.Binaries.Major, c.Binaries.Dir, major, c.dataDir())
		}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", versionFile, err)
	}
	if entries, _ := os.ReadDir(c.dataDir()); len(entries) > 0 {
		return fmt.Errorf("%s is not empty but holds no PostgreSQL cluster (no PG_VERSION): move it away", c.dataDir())
	}

	scratch := c.dataDir() + ".initdb"
	if err := os.RemoveAll(scratch); err != nil {
		return fmt.Errorf("removing an interrupted initdb: %w", err)
	}
	if err := c.mkdirOwned(scratch); err != nil {
		return fmt.Errorf("creating data directory: %w", c.accessHint(err))
	}
	if c.Primary != nil {
		return c.copyPrimary(ctx, scratch)
	}
	c.Logger.Info("initialising embedded PostgreSQL cluster (first start)", "dir", c.dataDir())
	out, err := c.command(ctx, "initdb",
		"--pgdata", scratch,
		"--username", Superuser,
		"--auth-local", "trust",
		"--auth-host", "reject",
		"--encoding", "UTF8",
		"--locale", "C",
	).CombinedOutput()
	if err != nil {
		return c.accessHint(fmt.Errorf("initdb failed: %w\n%s", err, strings.TrimSpace(string(out))))
	}
	_ = os.Remove(c.dataDir()) // an empty directory left by an earlier attempt
	if err := os.Rename(scratch, c.dataDir()); err != nil {
		return fmt.Errorf("moving the new cluster into place: %w", err)
	}
	return nil
}

func (c *Cluster) accessHint(err error) error {
	if c.cred == nil {
		return err
	}
	return fmt.Errorf("%w\n(hint: PostgreSQL runs as user %q, which must be able to reach %s: "+
		"every parent directory needs o+x, or choose another CARTREG_DATA_DIR)", err, c.RunAs, c.Dir)
}

// clearPreviousOwner deals with a postmaster.pid left behind. We hold the cluster lock, so
// its owner is dead: if its postmaster still runs (the owner was killed before it could stop
// it), shut that down; if the pid now belongs to some other process, the file is stale and
// postgres would refuse to start until it is removed.
func (c *Cluster) clearPreviousOwner() error {
	pidFile := filepath.Join(c.dataDir(), "postmaster.pid")
	raw, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading %s: %w", pidFile, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]))
	if pid > 0 && c.isPostmasterOfThisCluster(pid) {
		c.Logger.Warn("stopping a postgres left running by a previous cartreg", "pid", pid)
		return stopOrphan(pid, pidFile)
	}
	c.Logger.Warn("removing stale postmaster.pid", "pid", pid)
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale %s: %w", pidFile, err)
	}
	return nil
}

// isPostmasterOfThisCluster tells whether pid is a live postgres serving our data directory:
// a postmaster's working directory is its data directory.
func (c *Cluster) isPostmasterOfThisCluster(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err == nil {
		return cwd == c.dataDir()
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && strings.HasPrefix(strings.TrimSpace(string(comm)), "postgres")
}

func stopOrphan(pid int, pidFile string) error {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
		_ = syscall.Kill(pid, sig)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if syscall.Kill(pid, 0) != nil {
				_ = os.Remove(pidFile) // postgres removes it itself, except after SIGKILL
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return fmt.Errorf("could not stop the postgres (pid %d) left running on this cluster", pid)
}

// prepareSocketDir picks the directory for the Unix socket. A socket path is limited to about
// 107 bytes, so a deep data directory falls back to a short private one in the temp dir.
// socketPath is where the cluster's Unix socket lives: in the cluster directory, unless that
// path is too long for a socket address.
func (c *Cluster) socketPath() string {
	dir := filepath.Join(c.Dir, "run")
	if len(dir)+len("/.s.PGSQL.5432") > 100 {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("cartreg-pg-%x", fnv32(c.Dir)))
	}
	return dir
}

func (c *Cluster) prepareSocketDir() error {
	dir := c.socketPath()
	if err := c.mkdirOwned(dir); err != nil {
		return fmt.Errorf("creating socket directory: %w", c.accessHint(err))
	}
	c.socketDir = dir
	return nil
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

// spawn starts postgres in the foreground as our child. The child gets SIGINT (a clean fast
// shutdown) if we die: the kernel sends that parent-death signal when the OS thread that
// started it exits, so the start happens on a thread locked for the child's whole life.
func (c *Cluster) spawn() error {
	logFile, err := os.OpenFile(c.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("opening postgres log: %w", err)
	}
	c.logFile = logFile

	args := []string{"-D", c.dataDir(), "-k", c.socketDir, "-c", "listen_addresses="}
	names := make([]string, 0, len(c.Settings))
	for name := range c.Settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		args = append(args, "-c", name+"="+c.Settings[name])
	}

	c.exited = make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine, after postgres
		cmd := c.command(context.Background(), "postgres", args...)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("starting postgres: %w", err)
			close(c.exited)
			return
		}
		c.process = cmd.Process
		started <- nil
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	return <-started
}

func (c *Cluster) waitReady(ctx context.Context) error {
	url := c.URL("postgres")
	for {
		conn, err := pgconn.Connect(ctx, url)
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("postgres exited during start-up (%v); last lines of %s:\n%s", c.exitErr, c.logPath(), tail(c.logPath(), 2000))
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections in time (%w); last lines of %s:\n%s", ctx.Err(), c.logPath(), tail(c.logPath(), 2000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) ensureDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connecting to embedded PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	return CreateDatabase(ctx, conn, name, "")
}

// CreateDatabase creates a database unless it exists, optionally as a copy of template.
func CreateDatabase(ctx context.Context, conn *pgx.Conn, name, template string) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("looking for database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	_, err := conn.Exec(ctx, sql)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: another process won the race
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}
