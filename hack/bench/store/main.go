// Command store measures Capstan's stores side by side in one run: the
// memory store's Get, Create, Update and List of 10k (also on one core),
// the MongoDB store's Get, Create, Update (compare-and-swap) and List of 10k
// against the raw driver's FindOne, InsertOne, UpdateOne (compare-and-swap)
// and Find of 10k on the same embedded server, and the oplog watch's
// write-to-event latency. It runs several rounds, prints the medians in a
// table and ends with one line:
//
//	RESULT memory_get_ops=… memory_update_ops=… mongo_overhead_ratio=… oplog_watch_p99_ms=…
//
// mongo_overhead_ratio is the worst of the store/raw time ratios;
// oplog_watch_p99_ms is measured on a fresh server (an oplog of a few
// hundred entries: on FerretDB each read of the oplog reads all of it, so
// the latency grows with its length; the table also shows it with the
// oplog the other measurements left). Never build it with -race.
//
//	go run ./hack/bench/store [-rounds 3] [-quick]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/embedded"
	"github.com/capstanhq/capstan/pkg/store/memory"
	mongostore "github.com/capstanhq/capstan/pkg/store/mongo"
)

// Widget is the benchmark's resource: a few labels, a spec with a map and
// a slice, a status with a condition, about 600 bytes of JSON.
type Widget struct {
	meta.ObjectMeta `json:"metadata"`
	Spec            WidgetSpec   `json:"spec"`
	Status          WidgetStatus `json:"status"`
}

// WidgetSpec is the desired state.
type WidgetSpec struct {
	Replicas int               `json:"replicas"`
	Image    string            `json:"image"`
	Args     []string          `json:"args,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
}

// WidgetStatus is the observed state.
type WidgetStatus struct {
	Phase      string           `json:"phase,omitempty"`
	Conditions []meta.Condition `json:"conditions,omitempty"`
}

// The kinds share the Go shape; each has its own collection.
type (
	// CrudWidget is read and updated.
	CrudWidget struct{ Widget }
	// NewWidget is created.
	NewWidget struct{ Widget }
	// ListWidget is listed.
	ListWidget struct{ Widget }
	// LatencyWidget is watched.
	LatencyWidget struct{ Widget }
)

func widget(ns, name string, i int) Widget {
	return Widget{
		ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "bench", "tier": "web"}},
		Spec: WidgetSpec{Replicas: i, Image: "registry.example.com/team/app:1.2.3",
			Args: []string{"--listen=:8080", "--verbose"}, Env: map[string]string{"MODE": "production", "REGION": "eu-west-1"}},
		Status: WidgetStatus{Phase: "Running", Conditions: []meta.Condition{
			{Type: "Ready", Status: meta.ConditionTrue, Reason: "AllReplicasReady", Message: "all replicas are ready", LastTransitionTime: meta.Now(), ObservedGeneration: 1},
		}},
	}
}

// rawWidget is the raw driver's document: the same fields, JSON names
// through the driver's JSON-tag option.
type rawWidget struct {
	ID     string `bson:"_id"`
	Widget `bson:",inline"`
}

func newScheme() *store.Scheme {
	s := store.NewScheme()
	store.MustRegister[CrudWidget](s, "CrudWidget")
	store.MustRegister[NewWidget](s, "NewWidget")
	store.MustRegister[ListWidget](s, "ListWidget")
	store.MustRegister[LatencyWidget](s, "LatencyWidget")
	return s
}

var (
	rounds = flag.Int("rounds", 3, "measurement rounds (medians are reported)")
	quick  = flag.Bool("quick", false, "fewer operations, for a smoke run")
)

// sizes of one round.
type sizes struct {
	memGet, memUpdate, memCreate       int
	mongoGet, mongoUpdate, mongoCreate int
	list, crud, latency                int
}

func main() {
	flag.Parse()
	z := sizes{memGet: 300000, memUpdate: 100000, memCreate: 50000, mongoGet: 1000, mongoUpdate: 200, mongoCreate: 200, list: 10000, crud: 200, latency: 200}
	if *quick {
		z = sizes{memGet: 20000, memUpdate: 5000, memCreate: 5000, mongoGet: 200, mongoUpdate: 50, mongoCreate: 50, list: 2000, crud: 50, latency: 50}
	}
	ctx := context.Background()
	start := time.Now()
	var rows []row
	mem, err := benchMemory(ctx, z)
	if err != nil {
		fail(err)
	}
	rows = append(rows, mem.rows...)
	mg, err := benchMongo(ctx, z)
	if err != nil {
		fail(err)
	}
	rows = append(rows, mg.rows...)

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "measurement\tstore\traw driver\tstore/raw\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", r.name, r.store, r.raw, r.ratio)
	}
	_ = tw.Flush()
	fmt.Printf("\n%d rounds, medians; took %v; GOMAXPROCS=%d, %s/%s\n", *rounds, time.Since(start).Round(time.Second), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("RESULT memory_get_ops=%.0f memory_update_ops=%.0f mongo_overhead_ratio=%.2f oplog_watch_p99_ms=%.1f oplog_watch_p50_ms=%.1f oplog_entries_during_watch=%d\n",
		mem.getOps1, mem.updateOps1, mg.worstRatio, mg.p99, mg.p50, mg.oplogEntries)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// row is one line of the table.
type row struct{ name, store, raw, ratio string }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func opsPerSec(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

// --- memory ---

type memResult struct {
	rows                []row
	getOps1, updateOps1 float64 // one core
}

func benchMemory(ctx context.Context, z sizes) (memResult, error) {
	st := memory.New(newScheme())
	defer st.Close(ctx)
	for i := range 1000 {
		w := &CrudWidget{widget("bench", fmt.Sprintf("w%04d", i), i)}
		if err := st.Create(ctx, w); err != nil {
			return memResult{}, err
		}
	}
	for i := range z.list {
		w := &ListWidget{widget("list", fmt.Sprintf("w%05d", i), i)}
		if err := st.Create(ctx, w); err != nil {
			return memResult{}, err
		}
	}
	var get, get1, upd, upd1, create, list []float64
	created := 0
	for range *rounds {
		for _, one := range []bool{false, true} {
			prev := runtime.GOMAXPROCS(0)
			if one {
				runtime.GOMAXPROCS(1)
			}
			g, err := memGet(ctx, st, z.memGet)
			if err != nil {
				return memResult{}, err
			}
			u, err := memUpdate(ctx, st, z.memUpdate)
			if err != nil {
				return memResult{}, err
			}
			runtime.GOMAXPROCS(prev)
			if one {
				get1, upd1 = append(get1, g), append(upd1, u)
			} else {
				get, upd = append(get, g), append(upd, u)
			}
		}
		t0 := time.Now()
		for range z.memCreate {
			w := &NewWidget{widget("bench", fmt.Sprintf("n%07d", created), created)}
			created++
			if err := st.Create(ctx, w); err != nil {
				return memResult{}, err
			}
		}
		create = append(create, opsPerSec(z.memCreate, time.Since(t0)))
		t0 = time.Now()
		res, err := st.List(ctx, "ListWidget", store.ListOptions{Namespace: "list"})
		if err != nil {
			return memResult{}, err
		}
		if len(res.Items) != z.list {
			return memResult{}, fmt.Errorf("memory List returned %d items, want %d", len(res.Items), z.list)
		}
		list = append(list, float64(time.Since(t0).Microseconds())/1000)
	}
	r := memResult{getOps1: median(get1), updateOps1: median(upd1)}
	r.rows = []row{
		{"memory Get ops/s (1 goroutine)", fmt.Sprintf("%.0f", median(get)), "", ""},
		{"memory Get ops/s (GOMAXPROCS=1)", fmt.Sprintf("%.0f", r.getOps1), "", ""},
		{"memory Update ops/s (1 goroutine)", fmt.Sprintf("%.0f", median(upd)), "", ""},
		{"memory Update ops/s (GOMAXPROCS=1)", fmt.Sprintf("%.0f", r.updateOps1), "", ""},
		{"memory Create ops/s", fmt.Sprintf("%.0f", median(create)), "", ""},
		{fmt.Sprintf("memory List %d ms", z.list), fmt.Sprintf("%.1f", median(list)), "", ""},
	}
	return r, nil
}

func memGet(ctx context.Context, st store.Store, n int) (float64, error) {
	var w CrudWidget
	key := meta.Key{Namespace: "bench", Name: "w0500"}
	t0 := time.Now()
	for range n {
		if err := st.Get(ctx, key, &w); err != nil {
			return 0, err
		}
	}
	return opsPerSec(n, time.Since(t0)), nil
}

func memUpdate(ctx context.Context, st store.Store, n int) (float64, error) {
	w := &CrudWidget{}
	if err := st.Get(ctx, meta.Key{Namespace: "bench", Name: "w0001"}, w); err != nil {
		return 0, err
	}
	t0 := time.Now()
	for range n {
		w.Spec.Replicas++ // a spec change, compare-and-swap on the version held
		if err := st.Update(ctx, w); err != nil {
			return 0, err
		}
	}
	return opsPerSec(n, time.Since(t0)), nil
}

// --- mongo ---

type mongoResult struct {
	rows         []row
	worstRatio   float64
	p50, p99     float64
	oplogEntries int64
}

func benchMongo(ctx context.Context, z sizes) (mongoResult, error) {
	dir, err := os.MkdirTemp("", "capstan-bench-store-")
	if err != nil {
		return mongoResult{}, err
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.New(embedded.Options{DataDir: dir, Addr: "127.0.0.1:0"})
	if err != nil {
		return mongoResult{}, err
	}
	if err := srv.Start(ctx); err != nil {
		return mongoResult{}, err
	}
	defer srv.Stop(context.Background())
	st, err := mongostore.Open(ctx, srv.URI(), newScheme(), mongostore.Options{Database: "bench"})
	if err != nil {
		return mongoResult{}, err
	}
	defer st.Close(context.Background())
	raw, err := mongo.Connect(options.Client().ApplyURI(srv.URI()).SetBSONOptions(&options.BSONOptions{UseJSONStructTags: true}))
	if err != nil {
		return mongoResult{}, err
	}
	defer raw.Disconnect(context.Background())
	rdb := raw.Database("raw")
	oplog := raw.Database("local").Collection("oplog.rs")

	var res mongoResult
	// Watch latency on a server of its own with a fresh oplog, so that
	// neither measurement disturbs the other.
	lat, entries, err := freshWatchLatency(ctx, z.latency)
	if err != nil {
		return res, err
	}
	res.oplogEntries = entries
	res.p50, res.p99 = percentile(lat, 50), percentile(lat, 99)

	// Seed the read/update and list collections, through each path.
	for i := range z.crud {
		if err := st.Create(ctx, &CrudWidget{widget("bench", fmt.Sprintf("w%04d", i), i)}); err != nil {
			return res, err
		}
		if _, err := rdb.Collection("crud").InsertOne(ctx, rawWidget{ID: fmt.Sprintf("bench/w%04d", i), Widget: stamped(widget("bench", fmt.Sprintf("w%04d", i), i))}); err != nil {
			return res, err
		}
	}
	var docs []any
	for i := range z.list {
		name := fmt.Sprintf("w%05d", i)
		if err := st.Create(ctx, &ListWidget{widget("list", name, i)}); err != nil {
			return res, err
		}
		docs = append(docs, rawWidget{ID: "list/" + name, Widget: stamped(widget("list", name, i))})
		if len(docs) == 500 {
			if _, err := rdb.Collection("list").InsertMany(ctx, docs); err != nil {
				return res, err
			}
			docs = docs[:0]
		}
	}
	if len(docs) > 0 {
		if _, err := rdb.Collection("list").InsertMany(ctx, docs); err != nil {
			return res, err
		}
	}

	// What a List's revision costs when no watch runs: reading the newest
	// oplog entry, which on FerretDB reads the whole oplog (the store then
	// reuses that position for a minute, and a running tailer's position
	// costs nothing).
	t0 := time.Now()
	if err := oplog.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}})).Err(); err != nil {
		return res, err
	}
	newestMs := float64(time.Since(t0).Microseconds()) / 1000
	entries, _ = oplog.EstimatedDocumentCount(ctx)

	names := []string{"Get", "Create", "Update (CAS)", fmt.Sprintf("List %d", z.list)}
	storeT := make([][]float64, len(names)) // µs per operation
	rawT := make([][]float64, len(names))
	created := 0
	for round := range *rounds {
		// Get
		s, r, err := timeGet(ctx, st, rdb, z)
		if err != nil {
			return res, err
		}
		storeT[0], rawT[0] = append(storeT[0], s), append(rawT[0], r)
		// Create
		s, r, err = timeCreate(ctx, st, rdb, z, created)
		if err != nil {
			return res, err
		}
		created += z.mongoCreate
		storeT[1], rawT[1] = append(storeT[1], s), append(rawT[1], r)
		// Update
		s, r, err = timeUpdate(ctx, st, rdb, z)
		if err != nil {
			return res, err
		}
		storeT[2], rawT[2] = append(storeT[2], s), append(rawT[2], r)
		// List
		s, r, err = timeList(ctx, st, rdb, z, round%2 == 1)
		if err != nil {
			return res, err
		}
		storeT[3], rawT[3] = append(storeT[3], s), append(rawT[3], r)
	}
	for i, name := range names {
		sm, rm := median(storeT[i]), median(rawT[i])
		ratio := sm / rm
		res.worstRatio = max(res.worstRatio, ratio)
		unit := "µs/op"
		sv, rv := sm, rm
		if strings.HasPrefix(name, "List") {
			unit, sv, rv = "ms", sm/1000, rm/1000
		}
		res.rows = append(res.rows, row{fmt.Sprintf("mongo %s %s", name, unit), fmt.Sprintf("%.1f", sv), fmt.Sprintf("%.1f", rv), fmt.Sprintf("%.2f", ratio)})
	}
	res.rows = append(res.rows, row{fmt.Sprintf("read newest oplog entry ms (~%d entries)", entries), fmt.Sprintf("%.1f", newestMs), "", ""})
	res.rows = append(res.rows,
		row{fmt.Sprintf("oplog watch p50 ms (fresh server, %d entries at end)", res.oplogEntries), fmt.Sprintf("%.1f", res.p50), "", ""},
		row{fmt.Sprintf("oplog watch p99 ms (fresh server, %d entries at end)", res.oplogEntries), fmt.Sprintf("%.1f", res.p99), "", ""},
	)
	// The same watch after everything above, for the record.
	n, _ := oplog.EstimatedDocumentCount(ctx)
	full, err := watchLatency(ctx, st, max(z.latency/6, 20), "later")
	if err != nil {
		return res, err
	}
	res.rows = append(res.rows,
		row{fmt.Sprintf("oplog watch p50 ms (after the above, ~%d entries)", n), fmt.Sprintf("%.1f", percentile(full, 50)), "", ""},
		row{fmt.Sprintf("oplog watch p99 ms (after the above, ~%d entries)", n), fmt.Sprintf("%.1f", percentile(full, 99)), "", ""},
	)
	return res, nil
}

// freshWatchLatency measures the watch on a new embedded server and
// returns the latencies and the oplog's length at the end.
func freshWatchLatency(ctx context.Context, n int) ([]float64, int64, error) {
	dir, err := os.MkdirTemp("", "capstan-bench-watch-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.New(embedded.Options{DataDir: dir, Addr: "127.0.0.1:0"})
	if err != nil {
		return nil, 0, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, 0, err
	}
	defer srv.Stop(context.Background())
	st, err := mongostore.Open(ctx, srv.URI(), newScheme(), mongostore.Options{Database: "bench"})
	if err != nil {
		return nil, 0, err
	}
	defer st.Close(context.Background())
	lat, err := watchLatency(ctx, st, n, "fresh")
	if err != nil {
		return nil, 0, err
	}
	entries, _ := st.Client().Database("local").Collection("oplog.rs").EstimatedDocumentCount(ctx)
	return lat, entries, nil
}

// stamped fills what the store would: uid, version, generation, time.
func stamped(w Widget) Widget {
	w.UID = fmt.Sprintf("uid-%s-%s", w.Namespace, w.Name)
	w.ResourceVersion = "1"
	w.Generation = 1
	w.CreationTimestamp = meta.Now()
	return w
}

// The raw and store operations alternate one by one, so that a change in
// the machine's load weighs on both alike.

func timeGet(ctx context.Context, st *mongostore.Store, rdb *mongo.Database, z sizes) (float64, float64, error) {
	coll := rdb.Collection("crud")
	var rw rawWidget
	var w CrudWidget
	var rawT, storeT time.Duration
	for i := range z.mongoGet {
		k := i % z.crud
		t0 := time.Now()
		if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprintf("bench/w%04d", k)}}).Decode(&rw); err != nil {
			return 0, 0, err
		}
		t1 := time.Now()
		if err := st.Get(ctx, meta.Key{Namespace: "bench", Name: fmt.Sprintf("w%04d", k)}, &w); err != nil {
			return 0, 0, err
		}
		rawT, storeT = rawT+t1.Sub(t0), storeT+time.Since(t1)
	}
	return perOp(storeT, z.mongoGet), perOp(rawT, z.mongoGet), nil
}

func perOp(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

func timeCreate(ctx context.Context, st *mongostore.Store, rdb *mongo.Database, z sizes, from int) (float64, float64, error) {
	coll := rdb.Collection("created")
	var rawT, storeT time.Duration
	for i := from; i < from+z.mongoCreate; i++ {
		name := fmt.Sprintf("n%07d", i)
		doc := rawWidget{ID: "bench/" + name, Widget: stamped(widget("bench", name, i))}
		obj := &NewWidget{widget("bench", name, i)}
		t0 := time.Now()
		if _, err := coll.InsertOne(ctx, doc); err != nil {
			return 0, 0, err
		}
		t1 := time.Now()
		if err := st.Create(ctx, obj); err != nil {
			return 0, 0, err
		}
		rawT, storeT = rawT+t1.Sub(t0), storeT+time.Since(t1)
	}
	return perOp(storeT, z.mongoCreate), perOp(rawT, z.mongoCreate), nil
}

// timeUpdate changes the spec of each object in turn with a
// compare-and-swap on the version held: the raw driver with UpdateOne
// filtered by _id and metadata.resourceVersion, the store with Update of
// the object a Get returned (the reads are not timed).
func timeUpdate(ctx context.Context, st *mongostore.Store, rdb *mongo.Database, z sizes) (float64, float64, error) {
	coll := rdb.Collection("crud")
	var rawT, storeT time.Duration
	for i := range z.mongoUpdate {
		k := i % z.crud
		id := fmt.Sprintf("bench/w%04d", k)
		var cur rawWidget
		if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&cur); err != nil {
			return 0, 0, err
		}
		w := &CrudWidget{}
		if err := st.Get(ctx, meta.Key{Namespace: "bench", Name: fmt.Sprintf("w%04d", k)}, w); err != nil {
			return 0, 0, err
		}
		rv := cur.ResourceVersion
		var n int
		fmt.Sscan(rv, &n)
		w.Spec.Replicas++
		t0 := time.Now()
		res, err := coll.UpdateOne(ctx,
			bson.D{{Key: "_id", Value: id}, {Key: "metadata.resourceVersion", Value: rv}},
			bson.D{{Key: "$set", Value: bson.D{
				{Key: "spec.replicas", Value: cur.Spec.Replicas + 1},
				{Key: "metadata.resourceVersion", Value: fmt.Sprint(n + 1)},
				{Key: "metadata.generation", Value: cur.Generation + 1},
			}}})
		t1 := time.Now()
		if err != nil {
			return 0, 0, err
		}
		if res.MatchedCount != 1 {
			return 0, 0, fmt.Errorf("raw compare-and-swap on %s missed", id)
		}
		if err := st.Update(ctx, w); err != nil {
			return 0, 0, err
		}
		rawT, storeT = rawT+t1.Sub(t0), storeT+time.Since(t1)
	}
	return perOp(storeT, z.mongoUpdate), perOp(rawT, z.mongoUpdate), nil
}

// timeList lists with the raw driver and the store, in alternating order
// from round to round.
func timeList(ctx context.Context, st *mongostore.Store, rdb *mongo.Database, z sizes, storeFirst bool) (float64, float64, error) {
	rawList := func() (float64, error) {
		t0 := time.Now()
		cur, err := rdb.Collection("list").Find(ctx, bson.D{{Key: "metadata.namespace", Value: "list"}},
			options.Find().SetSort(bson.D{{Key: "metadata.namespace", Value: 1}, {Key: "metadata.name", Value: 1}}).SetBatchSize(1000))
		if err != nil {
			return 0, err
		}
		var all []rawWidget
		if err := cur.All(ctx, &all); err != nil {
			return 0, err
		}
		if len(all) != z.list {
			return 0, fmt.Errorf("raw Find returned %d documents, want %d", len(all), z.list)
		}
		return float64(time.Since(t0).Microseconds()), nil
	}
	storeList := func() (float64, error) {
		t0 := time.Now()
		res, err := st.List(ctx, "ListWidget", store.ListOptions{Namespace: "list"})
		if err != nil {
			return 0, err
		}
		if len(res.Items) != z.list {
			return 0, fmt.Errorf("store List returned %d items, want %d", len(res.Items), z.list)
		}
		return float64(time.Since(t0).Microseconds()), nil
	}
	var rawUs, storeUs float64
	var err error
	if storeFirst {
		if storeUs, err = storeList(); err == nil {
			rawUs, err = rawList()
		}
	} else {
		if rawUs, err = rawList(); err == nil {
			storeUs, err = storeList()
		}
	}
	return storeUs, rawUs, err
}

// watchLatency writes n times through the store, each time waiting for
// the watch event of the write, and returns the latencies in ms from the
// start of the write to the event.
func watchLatency(ctx context.Context, st *mongostore.Store, n int, prefix string) ([]float64, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := st.Watch(wctx, "LatencyWidget", store.WatchOptions{})
	if err != nil {
		return nil, err
	}
	lat := make([]float64, 0, n)
	w := &LatencyWidget{widget("lat", prefix, 0)}
	for i := range n {
		t0 := time.Now()
		if i == 0 {
			err = st.Create(ctx, w)
		} else {
			w.Spec.Replicas++
			err = st.Update(ctx, w)
		}
		if err != nil {
			return nil, err
		}
		want := w.ResourceVersion
		timeout := time.After(30 * time.Second)
		for {
			select {
			case ev, ok := <-ch:
				if !ok {
					return nil, fmt.Errorf("watch closed")
				}
				if ev.Type == store.Error || ev.Type == store.Expired {
					return nil, fmt.Errorf("watch: %s %v", ev.Type, ev.Err)
				}
				if ev.Object == nil || ev.Object.GetObjectMeta().Name != prefix || ev.Object.GetObjectMeta().ResourceVersion != want {
					continue
				}
			case <-timeout:
				return nil, fmt.Errorf("no event for write %d within 30s", i)
			}
			break
		}
		lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
	}
	return lat, nil
}

func percentile(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}
