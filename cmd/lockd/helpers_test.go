package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
)

// freeAddrs returns n distinct 127.0.0.1 addresses that were free a
// moment ago (all are held open together, so none is handed out twice).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs[i] = l.Addr().String()
	}
	return addrs
}

// pollInterval is how often the tests re-check a condition.
const pollInterval = 20 * time.Millisecond

// waitUntil polls cond until it holds, failing the test at the deadline.
// cond returns what it saw, for the failure message.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last saw: %s", timeout, what, saw)
		}
		time.Sleep(pollInterval)
	}
}

// httpGet returns the status and body of a GET, or code 0 and the error.
func httpGet(url string) (int, string) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(body)
}

// healthzOK is a waitUntil condition: /healthz at httpAddr answers 200 ok.
func healthzOK(httpAddr string) func() (bool, string) {
	return func() (bool, string) {
		code, body := httpGet("http://" + httpAddr + "/healthz")
		return code == http.StatusOK && body == "ok\n", strconv.Itoa(code) + " " + strings.TrimSpace(body)
	}
}

// metricValue returns the value of an unlabelled sample in a scrape.
func metricValue(t *testing.T, scrape, name string) uint64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(scrape))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("%s: value %q: %v", name, v, err)
			}
			return n
		}
	}
	t.Fatalf("no sample %s in:\n%s", name, scrape)
	return 0
}

// rpcClient connects to a node's client address.
func rpcClient(t *testing.T, addr string) *rpc.Client {
	t.Helper()
	cl, err := rpc.NewClient(addr, rpc.ClientConfig{ClusterID: defaultClusterID})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func putKey(t *testing.T, addr, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resp api.KVPutResponse
	if err := rpcClient(t, addr).Call(ctx, rpc.Method(api.MethodKVPut), &api.KVPutRequest{Key: key, Value: []byte(value)}, &resp); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func getKey(t *testing.T, addr, key string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resp api.KVGetResponse
	if err := rpcClient(t, addr).Call(ctx, rpc.Method(api.MethodKVGet), &api.KVGetRequest{Key: key}, &resp); err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if resp.KV == nil {
		return "", false
	}
	return string(resp.KV.Value), true
}

// syncBuffer is a bytes buffer safe for a writer and a concurrent reader.
type syncBuffer struct {
	mu sync.Mutex // protects b
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
