package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// credentials are the harness's own client of the server, an administrator registered with
// `cartreg client add` as an operator would, whose tokens come from the token endpoint like
// any client's (client_secret_basic) and are fetched again before they expire.
type credentials struct {
	endpoint, id, secret string
	http                 *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
}

// registerClient adds an administrator client to the server's database.
func registerClient(ctx context.Context, bin, dataDir, base string) (*credentials, error) {
	cmd := exec.CommandContext(ctx, bin, "client", "add", "-name", "make bench", "-role", "admin", "-json",
		"-data-dir", dataDir, "-base-url", base+"/fhir", "-log-level", "warn")
	cmd.Env = cleanEnv()
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("cartreg client add: %w", err)
	}
	var c struct {
		ID       string `json:"client_id"`
		Secret   string `json:"client_secret"`
		Endpoint string `json:"token_endpoint"`
	}
	if err := json.Unmarshal(out, &c); err != nil {
		return nil, fmt.Errorf("cartreg client add: %w: %s", err, out)
	}
	return &credentials{endpoint: c.Endpoint, id: c.ID, secret: c.Secret, http: &http.Client{Timeout: time.Minute}}, nil
}

// bearer is a valid access token, fetched anew when the last has under a minute left.
func (c *credentials) bearer(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Until(c.expires) > time.Minute {
		return c.token, nil
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.id), url.QueryEscape(c.secret))
	res, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		Error       string `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token endpoint: %s %s %v", res.Status, tok.Error, err)
	}
	c.token, c.expires = tok.AccessToken, time.Now().Add(time.Duration(tok.ExpiresIn)*time.Second)
	return c.token, nil
}
