// Command etcd starts a single-member etcd server from
// go.etcd.io/etcd/server/v3/embed (same version k8s.io/kubernetes pins),
// for Bolina Scaler's integration tests only.
package main

import (
	"flag"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		log.Fatalf("bad URL %q: %v", s, err)
	}
	return *u
}

func main() {
	name := flag.String("name", "default", "member name")
	dataDir := flag.String("data-dir", "", "data directory (required)")
	clientURL := flag.String("listen-client-urls", "http://127.0.0.1:2379", "client URL (one)")
	peerURL := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URL (one)")
	quota := flag.Int64("quota-backend-bytes", 0, "backend quota in bytes (0 = etcd default)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn, error")
	noFsync := flag.Bool("unsafe-no-fsync", false, "skip fsync (faster; test data only)")
	flag.Parse()
	if *dataDir == "" {
		log.Fatal("--data-dir is required")
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.LogLevel = *logLevel
	cu, pu := mustURL(*clientURL), mustURL(*peerURL)
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(*name)
	cfg.UnsafeNoFsync = *noFsync
	if *quota > 0 {
		cfg.QuotaBackendBytes = *quota
	}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		log.Printf("etcd ready: client %s", cu.String())
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		log.Fatal("etcd did not become ready within 60s")
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Printf("got %v, stopping", s)
		e.Close()
	case err := <-e.Err():
		log.Fatalf("etcd error: %v", err)
	}
}
