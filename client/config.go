package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/api"
)

// Config defaults.
const (
	DefaultDialTimeout         = 5 * time.Second
	DefaultRequestTimeout      = 10 * time.Second
	DefaultBackoffMin          = 25 * time.Millisecond
	DefaultBackoffMax          = time.Second
	DefaultMaxConcurrentWrites = 1024
	// DefaultConnsPerEndpoint is one: every call of a Client to a node
	// shares one multiplexed connection, so answers that are ready
	// together leave in one write and arrive in one read.
	DefaultConnsPerEndpoint = 1
)

// Config configures a Client. New calls Validate, which fills defaults.
type Config struct {
	// Endpoints are the client addresses ("host:port") of the cluster's
	// nodes. Any node serves any call; one is enough, all are better.
	Endpoints []string
	// ClusterID must match the cluster's (the connection handshake
	// refuses a client of another cluster). Empty matches a cluster
	// started without one.
	ClusterID string
	// Name describes this client in the servers' logs. Optional.
	Name string
	// TLS, if set, secures every connection (see rpc.ClientTLS for mutual
	// TLS). ServerName defaults to each endpoint's host.
	TLS *tls.Config

	// DialTimeout bounds connecting to one endpoint, TLS and handshake
	// included. Default 5 s.
	DialTimeout time.Duration
	// RequestTimeout bounds one attempt of a call that does not block by
	// design (everything but a waiting lock acquire and a watch stream).
	// An attempt that takes longer is abandoned and retried on the next
	// endpoint, so a node that hangs without closing its connections
	// costs at most this much. The caller's ctx bounds the whole call.
	// Default 10 s.
	RequestTimeout time.Duration

	// Retries wait BackoffMin doubling up to BackoffMax after each full
	// round of endpoints has failed, each wait drawn uniformly from its
	// upper half. Defaults 25 ms and 1 s.
	BackoffMin, BackoffMax time.Duration
	// Seed seeds this client's jitter (and nothing else). 0 draws one
	// from crypto/rand.
	Seed uint64

	// NoLeaderRouting sends every call to the current endpoint, which
	// forwards what the leader must serve. By default the client finds
	// which endpoint is the leader (status calls, rechecked every few
	// seconds) and sends writes, linearizable reads and keepalives there
	// directly, which saves a hop and the forwarding node's CPU.
	NoLeaderRouting bool

	// ConnsPerEndpoint is how many connections the Client keeps to each
	// node; calls are spread over them. Default 1 (like one gRPC
	// connection): a second one halves the calls each connection carries,
	// and so how many answers share a system call on both sides, which
	// under load cost more CPU than it saved (docs/performance.md, fix
	// 11). At most 64.
	ConnsPerEndpoint int

	// MaxConcurrentWrites bounds the writes one Client has in flight at
	// once (each holds an exactly-once lane while it runs, retries
	// included); more wait. Default 1024.
	MaxConcurrentWrites int
	// Limits are the cluster's limits, checked before a request is sent
	// so that it fails fast with the server's message. Default
	// api.DefaultLimits(); set it if the cluster configures others.
	Limits *api.Limits

	// Dial opens the raw connection to an endpoint. Default: TCP.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Logger receives endpoint changes, retries and session losses.
	// Default: discard.
	Logger hclog.Logger
}

// Validate checks the configuration, fills defaults, and reports every
// problem at once, naming the values.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("no endpoints: give at least one node's client address (host:port)"))
	}
	seen := map[string]bool{}
	for i, ep := range c.Endpoints {
		if _, _, err := net.SplitHostPort(ep); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %d %q is not host:port: %w", i, ep, err))
		}
		if seen[ep] {
			errs = append(errs, fmt.Errorf("endpoint %q is listed twice", ep))
		}
		seen[ep] = true
	}
	fill := func(name string, v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
		if *v < 0 {
			errs = append(errs, fmt.Errorf("%s %v must be positive", name, *v))
		}
	}
	fill("dial timeout", &c.DialTimeout, DefaultDialTimeout)
	fill("request timeout", &c.RequestTimeout, DefaultRequestTimeout)
	fill("backoff min", &c.BackoffMin, DefaultBackoffMin)
	fill("backoff max", &c.BackoffMax, max(DefaultBackoffMax, c.BackoffMin))
	if c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("backoff max %v must be ≥ backoff min %v", c.BackoffMax, c.BackoffMin))
	}
	if c.ConnsPerEndpoint == 0 {
		c.ConnsPerEndpoint = DefaultConnsPerEndpoint
	}
	if c.ConnsPerEndpoint < 1 || c.ConnsPerEndpoint > 64 {
		errs = append(errs, fmt.Errorf("connections per endpoint %d must be between 1 and 64", c.ConnsPerEndpoint))
	}
	if c.MaxConcurrentWrites == 0 {
		c.MaxConcurrentWrites = DefaultMaxConcurrentWrites
	}
	if c.MaxConcurrentWrites < 1 {
		errs = append(errs, fmt.Errorf("max concurrent writes %d must be at least 1", c.MaxConcurrentWrites))
	}
	if c.Limits == nil {
		l := api.DefaultLimits()
		c.Limits = &l
	} else if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return errors.Join(errs...)
}
