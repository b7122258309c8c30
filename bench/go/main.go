// corekv-go-bench: a load generator for any etcd v3 endpoint built on the official Go client
// (clientv3, as Debian's golang-etcd-server-dev ships it), shaped like etcd's own `benchmark`
// tool: --conns client connections (each a clientv3.Client with its own gRPC connection),
// --clients goroutines spread over them (goroutine j uses connection j % conns), one request
// in flight per goroutine. Most etcd users reach a server through this client (Kubernetes,
// etcdctl, Go services), so the server's cost per request is measured with it too, not only
// with corekv-bench's own Rust client.
//
// It prints one JSON line on stdout (requests, seconds, req/s, latency percentiles, errors,
// the CPU this process used) that `corekv-bench compare` reads; progress and clientv3's logs go
// to stderr.
//
// Build (GOPATH mode, no module downloads): bench/go/build.sh, or `corekv-bench compare`
// builds it on demand into target/.
//
//	corekv-go-bench --endpoints 127.0.0.1:2379 --conns 100 --clients 1000 put --total 100000 --key-space-size 100000 --sequential-keys --val-size 256
//	corekv-go-bench --conns 100 --clients 1000 range --consistency l --key-space-size 10000 --total 100000
//	corekv-go-bench --conns 100 --clients 1000 range foo --consistency s
//	corekv-go-bench --conns 10 --clients 100 txn-put --txn-ops 4 --key-space-size 10000
//	corekv-go-bench --conns 10 watch --watchers 100 --streams 10 --put-total 1000 --put-rate 100
//	corekv-go-bench --conns 4 --clients 64 lease-keepalive --total 100000
//	corekv-go-bench --user bench:pw --conns 100 --clients 1000 put --total 100000
//	corekv-go-bench --endpoints https://127.0.0.1:2379 --cacert ca.pem --cert client.pem --key client-key.pem put
//
// TLS as etcdctl's flags give it: --cacert, --cert, --key and --insecure-skip-tls-verify make
// a tls.Config (etcd's transport.TLSInfo.ClientConfig, as etcdctl builds it) that every
// connection dials with; an https:// endpoint is dialed with TLS even without them (the
// system's CAs), an endpoint without a scheme with TLS when any of them is given or
// --insecure-transport=false.
//
// With --user, the process authenticates once (or takes --token) and every connection sends
// that token (the `token` metadata, as clientv3 attaches it) instead of each clientv3.Client
// authenticating: one bcrypt check on the server per run at most, not one per connection.
package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"go.etcd.io/etcd/pkg/transport"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

type config struct {
	endpoints      string
	conns          int
	clients        int
	total          int
	duration       time.Duration
	keySize        int
	valSize        int
	keySpaceSize   int
	sequentialKeys bool
	consistency    string
	txnOps         int
	watchers       int
	streams        int
	putTotal       int
	putRate        float64
	putClients     int
	wait           time.Duration
	ttl            int64
	dialTimeout    time.Duration
	commandTimeout time.Duration
	seed           int64
	user           string
	password       string
	token          string
	cacert         string
	cert           string
	key            string
	insecureSkip   bool
	insecureTr     bool
	tls            *tls.Config
}

func usage(fs *flag.FlagSet) {
	fmt.Fprintf(os.Stderr, "usage: corekv-go-bench [flags] put|range [KEY]|txn-put|watch|lease-keepalive [flags]\n")
	fs.PrintDefaults()
}

func main() {
	var c config
	fs := flag.NewFlagSet("corekv-go-bench", flag.ExitOnError)
	fs.StringVar(&c.endpoints, "endpoints", "127.0.0.1:2379", "endpoints, comma separated")
	fs.IntVar(&c.conns, "conns", 1, "gRPC connections (one clientv3.Client each)")
	fs.IntVar(&c.clients, "clients", 1, "concurrent requesters; requester j uses connection j % conns")
	fs.IntVar(&c.total, "total", 10000, "total requests (put, range, txn-put, lease-keepalive)")
	fs.DurationVar(&c.duration, "duration", 0, "run this long instead of --total requests")
	fs.IntVar(&c.keySize, "key-size", 8, "key size in bytes (the key starts with the Go varint of its number)")
	fs.IntVar(&c.valSize, "val-size", 8, "value size in bytes")
	fs.IntVar(&c.keySpaceSize, "key-space-size", 1, "distinct keys (range: 0 reads KEY, N > 0 reads the put workload's keys 0..N-1)")
	fs.BoolVar(&c.sequentialKeys, "sequential-keys", false, "keys in order (request number modulo the key space) instead of at random")
	fs.StringVar(&c.consistency, "consistency", "l", "range: l (linearizable) or s (serializable)")
	fs.IntVar(&c.txnOps, "txn-ops", 1, "txn-put: puts per txn")
	fs.IntVar(&c.watchers, "watchers", 100, "watch: watchers of the key")
	fs.IntVar(&c.streams, "streams", 10, "watch: watch streams (clientv3.NewWatcher each), spread over the connections")
	fs.IntVar(&c.putTotal, "put-total", 1000, "watch: puts")
	fs.Float64Var(&c.putRate, "put-rate", 100, "watch: puts per second (0 = back to back)")
	fs.IntVar(&c.putClients, "put-clients", 1, "watch: concurrent putters")
	fs.DurationVar(&c.wait, "wait", 10*time.Second, "watch: how long to wait for missing events after the last put")
	fs.Int64Var(&c.ttl, "ttl", 60, "lease-keepalive: TTL of the leases granted for the run")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 5*time.Second, "limit for dialing")
	fs.DurationVar(&c.commandTimeout, "command-timeout", 30*time.Second, "limit for one request (longer counts as an error)")
	fs.Int64Var(&c.seed, "seed", 1, "seed for keys and values")
	fs.StringVar(&c.user, "user", "", "username[:password] to authenticate as (once; every connection sends the token)")
	fs.StringVar(&c.password, "password", "", "password for --user (if it has none)")
	fs.StringVar(&c.token, "token", "", "an auth token to send (instead of authenticating as --user)")
	fs.StringVar(&c.cacert, "cacert", "", "verify certificates of TLS-enabled secure servers using this CA bundle")
	fs.StringVar(&c.cert, "cert", "", "identify secure client using this TLS certificate file")
	fs.StringVar(&c.key, "key", "", "identify secure client using this TLS key file")
	fs.BoolVar(&c.insecureSkip, "insecure-skip-tls-verify", false, "skip server certificate verification")
	fs.BoolVar(&c.insecureTr, "insecure-transport", true, "disable transport security for endpoints without a scheme (https:// ones get TLS anyway)")
	fs.Usage = func() { usage(fs) }

	// Flags may come before and after the workload name, as with etcd's tool.
	fs.Parse(os.Args[1:])
	if fs.NArg() == 0 {
		usage(fs)
		os.Exit(2)
	}
	workload := fs.Arg(0)
	var positional []string
	for rest := fs.Args()[1:]; len(rest) > 0; rest = fs.Args()[1:] {
		fs.Parse(rest)
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
	}
	if c.conns < 1 || c.clients < 1 {
		fatal("--conns and --clients must be at least 1")
	}
	c.tls = clientTLS(&c)

	clients := dial(&c)
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()

	var r *result
	switch workload {
	case "put":
		r = runUnary(&c, clients, putOp(&c))
	case "range":
		r = runUnary(&c, clients, rangeOp(&c, positional))
	case "txn-put":
		r = runUnary(&c, clients, txnPutOp(&c))
	case "watch":
		r = runWatch(&c, clients)
	case "lease-keepalive":
		r = runLeaseKeepalive(&c, clients)
	default:
		fatal(fmt.Sprintf("unknown workload %q (put, range, txn-put, watch, lease-keepalive)", workload))
	}
	r.Workload = workload
	r.Conns = c.conns
	r.Clients = c.clients
	r.Endpoints = strings.Split(c.endpoints, ",")
	r.LoadGenerator = "go clientv3"
	out, err := json.Marshal(r)
	if err != nil {
		fatal(err.Error())
	}
	fmt.Println(string(out))
}

func fatal(msg string) {
	fmt.Fprintf(os.Stderr, "corekv-go-bench: %s\n", msg)
	os.Exit(1)
}

// tokenCreds sends an auth token as clientv3 does (its per-RPC credentials put the `token`
// metadata on every call, unary and streaming).
type tokenCreds struct{ token string }

func (t tokenCreds) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	return map[string]string{"token": t.token}, nil
}

func (t tokenCreds) RequireTransportSecurity() bool { return false }

// clientTLS builds the tls.Config as etcdctl does (transport.TLSInfo.ClientConfig from --cert,
// --key, --cacert; an empty one for --insecure-transport=false; InsecureSkipVerify from
// --insecure-skip-tls-verify), or nil without any TLS flag: clientv3 then dials https://
// endpoints with TLS and the system's CAs and the others in plaintext. Unlike etcdctl, which
// ignores --insecure-skip-tls-verify alone, that flag alone is a TLS flag too (as corekv-bench's).
func clientTLS(c *config) *tls.Config {
	if c.cert == "" && c.key == "" && c.cacert == "" && c.insecureTr && !c.insecureSkip {
		return nil
	}
	cfg := &tls.Config{}
	if c.cert != "" || c.key != "" || c.cacert != "" {
		info := transport.TLSInfo{CertFile: c.cert, KeyFile: c.key, TrustedCAFile: c.cacert}
		var err error
		if cfg, err = info.ClientConfig(); err != nil {
			fatal(fmt.Sprintf("TLS: %v", err))
		}
	}
	cfg.InsecureSkipVerify = c.insecureSkip
	return cfg
}

// authenticate gets a token for --user through the first endpoint.
func authenticate(c *config, ep string, lc *zap.Config) string {
	name, password := c.user, c.password
	if password == "" {
		if i := strings.Index(name, ":"); i >= 0 {
			name, password = name[:i], name[i+1:]
		}
	}
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: c.dialTimeout, LogConfig: lc, TLS: c.tls})
	if err != nil {
		fatal(fmt.Sprintf("dial %s: %v", ep, err))
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), c.commandTimeout)
	defer cancel()
	resp, err := pb.NewAuthClient(cl.ActiveConnection()).Authenticate(ctx, &pb.AuthenticateRequest{Name: name, Password: password})
	if err != nil {
		fatal(fmt.Sprintf("authenticate as %s: %v", name, err))
	}
	return resp.Token
}

func dial(c *config) []*clientv3.Client {
	eps := strings.Split(c.endpoints, ",")
	// clientv3 logs at info level by default; only its errors belong on stderr.
	lc := zap.NewProductionConfig()
	lc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	var dialOpts []grpc.DialOption
	token := c.token
	if token == "" && c.user != "" {
		token = authenticate(c, eps[0], &lc)
	}
	if token != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(tokenCreds{token}))
	}
	clients := make([]*clientv3.Client, c.conns)
	for i := range clients {
		// One endpoint per connection, rotating, as etcd's tool spreads its connections.
		cl, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{eps[i%len(eps)]},
			DialTimeout: c.dialTimeout,
			LogConfig:   &lc,
			DialOptions: dialOpts,
			TLS:         c.tls,
		})
		if err != nil {
			fatal(fmt.Sprintf("dial %s: %v", eps[i%len(eps)], err))
		}
		clients[i] = cl
	}
	return clients
}

// key is etcd's benchmark key: the Go varint of n, zero-padded to size bytes.
func key(size int, n int) string {
	k := make([]byte, size)
	binary.PutVarint(k, int64(n))
	return string(k)
}

func checkKeySpace(c *config) {
	if c.keySpaceSize < 1 {
		fatal("--key-space-size must be at least 1")
	}
	if need := binary.PutVarint(make([]byte, 10), int64(c.keySpaceSize-1)); need > c.keySize {
		fatal(fmt.Sprintf("--key-size %d cannot hold key numbers up to %d (%d bytes needed)", c.keySize, c.keySpaceSize-1, need))
	}
}

func (c *config) keyNumber(seq int, rng *rand.Rand) int {
	if c.sequentialKeys {
		return seq % c.keySpaceSize
	}
	return rng.Intn(c.keySpaceSize)
}

func randomValue(size int, seed int64) string {
	b := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(b)
	return string(b)
}

// op sends request number seq on cl for requester j.
type op func(ctx context.Context, cl *clientv3.Client, seq, j int, rng *rand.Rand) error

func putOp(c *config) op {
	checkKeySpace(c)
	v := randomValue(c.valSize, c.seed)
	return func(ctx context.Context, cl *clientv3.Client, seq, _ int, rng *rand.Rand) error {
		_, err := cl.Put(ctx, key(c.keySize, c.keyNumber(seq, rng)), v)
		return err
	}
}

func rangeOp(c *config, positional []string) op {
	var opts []clientv3.OpOption
	switch c.consistency {
	case "l":
	case "s":
		opts = append(opts, clientv3.WithSerializable())
	default:
		fatal("--consistency must be l or s")
	}
	if len(positional) > 0 {
		k := positional[0]
		if len(positional) > 1 {
			opts = append(opts, clientv3.WithRange(positional[1]))
		}
		return func(ctx context.Context, cl *clientv3.Client, _, _ int, _ *rand.Rand) error {
			_, err := cl.Get(ctx, k, opts...)
			return err
		}
	}
	checkKeySpace(c)
	return func(ctx context.Context, cl *clientv3.Client, seq, _ int, rng *rand.Rand) error {
		_, err := cl.Get(ctx, key(c.keySize, c.keyNumber(seq, rng)), opts...)
		return err
	}
}

func txnPutOp(c *config) op {
	checkKeySpace(c)
	if c.txnOps < 1 || c.txnOps > c.keySpaceSize {
		fatal(fmt.Sprintf("--txn-ops must be between 1 and --key-space-size (%d)", c.keySpaceSize))
	}
	v := randomValue(c.valSize, c.seed)
	return func(ctx context.Context, cl *clientv3.Client, seq, _ int, rng *rand.Rand) error {
		// Distinct keys within one txn (etcd refuses duplicates): consecutive numbers.
		base := c.keyNumber(seq, rng)
		ops := make([]clientv3.Op, c.txnOps)
		for i := range ops {
			ops[i] = clientv3.OpPut(key(c.keySize, (base+i)%c.keySpaceSize), v)
		}
		_, err := cl.Txn(ctx).Then(ops...).Commit()
		return err
	}
}

// result is the JSON line; the field names are corekv-bench --json's where they mean the same.
type result struct {
	Workload       string             `json:"workload"`
	LoadGenerator  string             `json:"load_generator"`
	Endpoints      []string           `json:"endpoints"`
	Conns          int                `json:"conns"`
	Clients        int                `json:"clients"`
	Requests       int                `json:"requests"`
	Errors         int                `json:"errors"`
	ErrorKinds     map[string]int     `json:"error_kinds"`
	DurationS      float64            `json:"duration_s"`
	RequestsPerSec float64            `json:"requests_per_sec"`
	P50Ms          float64            `json:"p50_ms"`
	P90Ms          float64            `json:"p90_ms"`
	P99Ms          float64            `json:"p99_ms"`
	P999Ms         float64            `json:"p999_ms"`
	MaxMs          float64            `json:"max_ms"`
	ClientCPU      map[string]float64 `json:"client_cpu"`
	Extra          map[string]any     `json:"extra,omitempty"`
}

// recorder holds one goroutine's latencies (merged at the end: no locks while measuring).
type recorder struct {
	lat    []time.Duration
	errors map[string]int
}

func newRecorder() *recorder { return &recorder{errors: map[string]int{}} }

func (r *recorder) err(e error) {
	s := e.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	r.errors[s]++
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func summarize(recs []*recorder, elapsed time.Duration, cpu float64) *result {
	var all []time.Duration
	r := &result{ErrorKinds: map[string]int{}, DurationS: elapsed.Seconds()}
	for _, rec := range recs {
		all = append(all, rec.lat...)
		for k, n := range rec.errors {
			r.ErrorKinds[k] += n
			r.Errors += n
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r.Requests = len(all)
	if elapsed > 0 {
		r.RequestsPerSec = float64(len(all)) / elapsed.Seconds()
	}
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		i := int(p / 100 * float64(len(all)))
		if i >= len(all) {
			i = len(all) - 1
		}
		return float64(all[i]) / 1e6
	}
	r.P50Ms, r.P90Ms, r.P99Ms, r.P999Ms, r.MaxMs = pct(50), pct(90), pct(99), pct(99.9), pct(100)
	r.ClientCPU = map[string]float64{"cpu_s": cpu}
	if elapsed > 0 {
		r.ClientCPU["cores_used"] = cpu / elapsed.Seconds()
	}
	return r
}

// runUnary is the closed loop of etcd's tool: every requester sends one request, waits for the
// reply, sends the next, until --total were handed out or --duration passed.
func runUnary(c *config, clients []*clientv3.Client, f op) *result {
	var issued int64 = -1
	total := int64(c.total)
	var deadline time.Time
	if c.duration > 0 {
		total = 1<<62 - 1
	}
	recs := make([]*recorder, c.clients)
	var wg sync.WaitGroup
	cpu0 := cpuSeconds()
	start := time.Now()
	if c.duration > 0 {
		deadline = start.Add(c.duration)
	}
	for j := 0; j < c.clients; j++ {
		rec := newRecorder()
		recs[j] = rec
		wg.Add(1)
		go func(j int) {
			defer wg.Done()
			cl := clients[j%len(clients)]
			rng := rand.New(rand.NewSource(c.seed + int64(j)))
			for {
				seq := atomic.AddInt64(&issued, 1)
				if seq >= total || (!deadline.IsZero() && time.Now().After(deadline)) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), c.commandTimeout)
				t := time.Now()
				err := f(ctx, cl, int(seq), j, rng)
				d := time.Since(t)
				cancel()
				if err != nil {
					rec.err(err)
				} else {
					rec.lat = append(rec.lat, d)
				}
			}
		}(j)
	}
	wg.Wait()
	return summarize(recs, time.Since(start), cpuSeconds()-cpu0)
}

// runWatch: --watchers watchers of one key, on --streams watch streams, fed by --put-total
// puts; each put's value carries its send time, so the latency is put sent -> event received.
// Requests in the report are events received; events not received within --wait are errors.
func runWatch(c *config, clients []*clientv3.Client) *result {
	if c.streams < 1 || c.watchers < c.streams || c.valSize < 8 {
		fatal("watch needs --streams >= 1, --watchers >= --streams, --val-size >= 8")
	}
	k := fmt.Sprintf("/corekv-go-bench/watch/%x-%d", time.Now().UnixNano(), c.seed)
	watchers := make([]clientv3.Watcher, c.streams)
	for s := range watchers {
		watchers[s] = clientv3.NewWatcher(clients[s%len(clients)])
	}
	defer func() {
		for _, w := range watchers {
			w.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recs := make([]*recorder, c.watchers)
	chans := make([]clientv3.WatchChan, c.watchers)
	createStart := time.Now()
	for w := 0; w < c.watchers; w++ {
		recs[w] = newRecorder()
		// WithCreatedNotify: Watch returns once the server acknowledged the watch, so no put
		// is sent before every watcher is in place.
		chans[w] = watchers[w%c.streams].Watch(ctx, k, clientv3.WithCreatedNotify())
		if resp := <-chans[w]; !resp.Created {
			fatal(fmt.Sprintf("watch %d not created: %v", w, resp.Err()))
		}
	}
	createS := time.Since(createStart).Seconds()
	var received int64
	expected := int64(c.watchers) * int64(c.putTotal)
	var wg sync.WaitGroup
	for w := 0; w < c.watchers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rec := recs[w]
			got := 0
			for resp := range chans[w] {
				now := time.Now()
				for _, ev := range resp.Events {
					if len(ev.Kv.Value) >= 8 {
						sent := int64(binary.LittleEndian.Uint64(ev.Kv.Value))
						rec.lat = append(rec.lat, time.Duration(now.UnixNano()-sent))
						got++
					}
				}
				if err := resp.Err(); err != nil {
					rec.err(err)
				}
				atomic.AddInt64(&received, int64(len(resp.Events)))
				if got >= c.putTotal {
					return
				}
			}
		}(w)
	}
	cpu0 := cpuSeconds()
	start := time.Now()
	putRec := newRecorder()
	var putMu sync.Mutex
	var issued int64 = -1
	var pwg sync.WaitGroup
	for p := 0; p < c.putClients; p++ {
		pwg.Add(1)
		go func(p int) {
			defer pwg.Done()
			cl := clients[p%len(clients)]
			val := make([]byte, c.valSize)
			for {
				seq := atomic.AddInt64(&issued, 1)
				if seq >= int64(c.putTotal) {
					return
				}
				if c.putRate > 0 {
					due := start.Add(time.Duration(float64(seq) / c.putRate * 1e9))
					time.Sleep(time.Until(due))
				}
				t := time.Now()
				binary.LittleEndian.PutUint64(val, uint64(t.UnixNano()))
				pctx, pcancel := context.WithTimeout(context.Background(), c.commandTimeout)
				_, err := cl.Put(pctx, k, string(val))
				pcancel()
				d := time.Since(t)
				putMu.Lock()
				if err != nil {
					putRec.err(err)
				} else {
					putRec.lat = append(putRec.lat, d)
				}
				putMu.Unlock()
			}
		}(p)
	}
	pwg.Wait()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(c.wait):
		cancel()
		<-done
	}
	elapsed := time.Since(start)
	r := summarize(recs, elapsed, cpuSeconds()-cpu0)
	puts := summarize([]*recorder{putRec}, elapsed, 0)
	// Events that never came are errors, as corekv-bench counts them.
	missing := expected - atomic.LoadInt64(&received)
	if missing > 0 {
		r.ErrorKinds[fmt.Sprintf("events not delivered within %v", c.wait)] += int(missing)
		r.Errors += int(missing)
	}
	r.Extra = map[string]any{
		"watchers":         c.watchers,
		"streams":          c.streams,
		"watch_create_s":   createS,
		"events_expected":  expected,
		"events_missing":   missing,
		"puts":             puts.Requests,
		"put_errors":       puts.Errors,
		"put_p50_ms":       puts.P50Ms,
		"put_p99_ms":       puts.P99Ms,
		"requests_meaning": "events received; latency = put sent -> event received",
	}
	return r
}

// runLeaseKeepalive: as etcd's tool, each requester grants a lease and renews it with
// KeepAliveOnce back to back (clientv3 opens a keep-alive stream per KeepAliveOnce).
func runLeaseKeepalive(c *config, clients []*clientv3.Client) *result {
	leases := make([]clientv3.LeaseID, c.clients)
	for j := range leases {
		ctx, cancel := context.WithTimeout(context.Background(), c.commandTimeout)
		resp, err := clients[j%len(clients)].Grant(ctx, c.ttl)
		cancel()
		if err != nil {
			fatal(fmt.Sprintf("grant: %v", err))
		}
		leases[j] = resp.ID
	}
	r := runUnary(c, clients, func(ctx context.Context, cl *clientv3.Client, _, j int, _ *rand.Rand) error {
		_, err := cl.KeepAliveOnce(ctx, leases[j])
		return err
	})
	for j, id := range leases {
		ctx, cancel := context.WithTimeout(context.Background(), c.commandTimeout)
		clients[j%len(clients)].Revoke(ctx, id)
		cancel()
	}
	return r
}
