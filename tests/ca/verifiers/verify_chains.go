// verify_chains asks Go's crypto/x509 whether it accepts certificate chains (Tether's
// verifier-matrix test builds and runs it; standard library only).
//
// stdin:  {"now": <unix seconds>, "cases": [{"name": "...", "chain_pem": "leaf then intermediates",
//          "roots_pem": "trusted roots"}]}
// stdout: {"<name>": null when accepted for both TLS client and server use, else the error text}
package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"
)

type verifyCase struct {
	Name     string `json:"name"`
	ChainPEM string `json:"chain_pem"`
	RootsPEM string `json:"roots_pem"`
}

type request struct {
	Now   int64        `json:"now"`
	Cases []verifyCase `json:"cases"`
}

func parseAll(data string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := []byte(data)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// check verifies the leaf twice: a mesh leaf is presented by both ends of a connection.
func check(c verifyCase, now time.Time) error {
	chain, err := parseAll(c.ChainPEM)
	if err != nil {
		return fmt.Errorf("chain: %w", err)
	}
	roots, err := parseAll(c.RootsPEM)
	if err != nil {
		return fmt.Errorf("roots: %w", err)
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: now}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, i := range chain[1:] {
		opts.Intermediates.AddCert(i)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		opts.KeyUsages = []x509.ExtKeyUsage{usage}
		if _, err := chain[0].Verify(opts); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "verify_chains: bad request:", err)
		os.Exit(2)
	}
	now := time.Unix(req.Now, 0)
	out := map[string]*string{}
	for _, c := range req.Cases {
		out[c.Name] = nil
		if err := check(c, now); err != nil {
			text := err.Error()
			out[c.Name] = &text
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
