package rpc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"
)

// testCA is a certificate authority made in-process for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue signs a leaf certificate for 127.0.0.1 usable by servers and clients.
func (ca *testCA) issue(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTLSServerAuth(t *testing.T) {
	ca := newTestCA(t, "ca")
	cs := newCallServer(t, func(c *ServerConfig) { c.TLS = ServerTLS(ca.issue(t, "server"), nil) })
	addr := startServer(t, cs.srv)
	ctx := ctxTimeout(t, 10*time.Second)
	c := newTestClient(t, addr, func(c *ClientConfig) { c.TLS = ClientTLS(ca.pool, nil, "") })
	var resp echoResp
	if err := c.Call(ctx, mEcho, &echoReq{Text: "over tls"}, &resp); err != nil || resp.Text != "over tls" {
		t.Fatalf("%v %+v", err, resp)
	}
	cc, _ := c.conn(ctx)
	if _, ok := cc.nc.(*tls.Conn); !ok {
		t.Fatalf("connection is %T, not TLS", cc.nc)
	}
	// A client that does not trust the server's CA is refused.
	other := newTestCA(t, "other")
	bad := newTestClient(t, addr, func(c *ClientConfig) { c.TLS = ClientTLS(other.pool, nil, "") })
	var ue x509.UnknownAuthorityError
	if err := bad.Call(ctx, mEcho, &echoReq{}, nil); !errors.As(err, &ue) {
		t.Fatalf("untrusted server: %v", err)
	}
	// A plain client cannot talk to a TLS server.
	plain := newTestClient(t, addr, func(c *ClientConfig) { c.DialTimeout = time.Second })
	if err := plain.Call(ctx, mEcho, &echoReq{}, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("plain client: %v", err)
	}
}

func TestTLSMutual(t *testing.T) {
	ca := newTestCA(t, "ca")
	cs := newCallServer(t, func(c *ServerConfig) { c.TLS = ServerTLS(ca.issue(t, "server"), ca.pool) })
	addr := startServer(t, cs.srv)
	ctx := ctxTimeout(t, 10*time.Second)
	cert := ca.issue(t, "client")
	c := newTestClient(t, addr, func(c *ClientConfig) { c.TLS = ClientTLS(ca.pool, &cert, "") })
	if err := c.Call(ctx, mEcho, &echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
	// Without a client certificate, or with one from another CA: refused.
	noCert := newTestClient(t, addr, func(c *ClientConfig) { c.TLS = ClientTLS(ca.pool, nil, "") })
	if err := noCert.Call(ctx, mEcho, &echoReq{}, nil); err == nil {
		t.Fatal("client without a certificate was served")
	}
	otherCert := newTestCA(t, "other").issue(t, "intruder")
	intruder := newTestClient(t, addr, func(c *ClientConfig) { c.TLS = ClientTLS(ca.pool, &otherCert, "") })
	if err := intruder.Call(ctx, mEcho, &echoReq{}, nil); err == nil {
		t.Fatal("client with a certificate from another CA was served")
	}
	// The server keeps serving the good client.
	if err := c.Call(ctx, mEcho, &echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
}
