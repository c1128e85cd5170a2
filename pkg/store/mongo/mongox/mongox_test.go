package mongox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
)

func TestMain(m *testing.M) { mongotest.Main(m) }

func TestClassify(t *testing.T) {
	cmd := func(code int32, labels ...string) error {
		return mongo.CommandError{Code: code, Message: "m", Labels: labels}
	}
	cases := []struct {
		name string
		err  error
		want errs.Code
	}{
		{"nil", nil, errs.OK},
		{"no documents", mongo.ErrNoDocuments, errs.NotFound},
		{"wrapped no documents", fmt.Errorf("x: %w", mongo.ErrNoDocuments), errs.NotFound},
		{"disconnected", mongo.ErrClientDisconnected, errs.FailedPrecondition},
		{"canceled", context.Canceled, errs.Canceled},
		{"deadline", context.DeadlineExceeded, errs.DeadlineExceeded},
		{"duplicate key write", mongo.WriteException{WriteErrors: mongo.WriteErrors{{Code: 11000, Message: "E11000"}}}, errs.AlreadyExists},
		{"duplicate key command", cmd(11000), errs.AlreadyExists},
		{"maxTimeMS", cmd(50), errs.DeadlineExceeded},
		{"wtimeout", mongo.WriteException{WriteConcernError: &mongo.WriteConcernError{Code: 64}}, errs.DeadlineExceeded},
		{"not primary", cmd(10107), errs.Unavailable},
		{"shutdown", cmd(91), errs.Unavailable},
		{"network label", cmd(0, "NetworkError"), errs.Unavailable},
		{"retryable label", cmd(1234, "RetryableWriteError"), errs.Unavailable},
		{"server selection", topology.ServerSelectionError{Wrapped: errors.New("no server")}, errs.Unavailable},
		{"server selection on a deadline", topology.ServerSelectionError{Wrapped: context.DeadlineExceeded}, errs.Unavailable},
		{"connection", topology.ConnectionError{Wrapped: errors.New("reset")}, errs.Unavailable},
		{"bad value", cmd(2), errs.InvalidArgument},
		{"document too large", cmd(10334), errs.InvalidArgument},
		{"namespace not found", cmd(26), errs.NotFound},
		{"index conflict", cmd(85), errs.FailedPrecondition},
		{"not implemented", cmd(238), errs.Unimplemented},
		{"change streams on a standalone", cmd(40573), errs.Unimplemented},
		{"history lost", cmd(286), errs.OutOfRange},
		{"write conflict", cmd(112), errs.Aborted},
		{"unauthorized", cmd(13), errs.PermissionDenied},
		{"auth failed", cmd(18), errs.Unauthenticated},
		{"nil document", mongo.ErrNilDocument, errs.InvalidArgument},
		{"unknown", errors.New("boom"), errs.Unknown},
		{"unknown server code", cmd(99999), errs.Unknown},
	}
	for _, c := range cases {
		if got := Classify(c.err); got != c.want {
			t.Errorf("%s: Classify = %v, want %v", c.name, got, c.want)
		}
		mapped := Err(c.err)
		if errs.CodeOf(mapped) != c.want {
			t.Errorf("%s: Err has code %v, want %v", c.name, errs.CodeOf(mapped), c.want)
		}
		var e *errs.Error
		if c.err != nil && (!errors.As(mapped, &e) || e.Cause == nil || e.Cause.Error() != c.err.Error()) {
			t.Errorf("%s: Err does not wrap the driver error", c.name)
		}
	}
	coded := errs.New(errs.Conflict, "mine")
	if Err(coded) != coded || Errf(coded, "x") != coded {
		t.Errorf("an error that already has a code was rewrapped")
	}
}

func TestErrorsFromTheServer(t *testing.T) {
	db := mongotest.Database(t)
	coll := db.Collection("c")
	ctx := t.Context()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	if !errs.IsAlreadyExists(Err(err)) {
		t.Errorf("duplicate _id: %v", Err(err))
	}
	err = coll.FindOne(ctx, bson.D{{Key: "_id", Value: 2}}).Err()
	if !errs.IsNotFound(Err(err)) {
		t.Errorf("missing document: %v", Err(err))
	}
	dctx, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-dctx.Done()
	err = coll.FindOne(dctx, bson.D{{Key: "_id", Value: 1}}).Err()
	if !errs.IsDeadlineExceeded(Err(err)) {
		t.Errorf("expired context: %v", Err(err))
	}
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	err = coll.FindOne(cctx, bson.D{{Key: "_id", Value: 1}}).Err()
	if !errs.IsCanceled(Err(err)) {
		t.Errorf("canceled context: %v", Err(err))
	}
}

func TestUnavailableWhileTheServerIsDown(t *testing.T) {
	srv := mongotest.NewServer(t)
	client, err := Connect(t.Context(), srv.URI(), ConnectOptions{ServerSelectionTimeout: time.Second, HeartbeatInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	coll := client.Database("db").Collection("c")
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// The first operation may meet a pooled connection the server closed;
	// all of them must say Unavailable, and so must Connect.
	for i := range 3 {
		_, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: 2 + i}})
		if !errs.IsUnavailable(Err(err)) || !Retryable(err) {
			t.Errorf("insert %d while down: %v", i, Err(err))
		}
	}
	if _, err := Connect(t.Context(), srv.URI(), ConnectOptions{ServerSelectionTimeout: 500 * time.Millisecond}); !errs.IsUnavailable(err) {
		t.Errorf("Connect while down: %v", err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: 10}})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the restart: %v", Err(err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestConnectRejectsBadURIs(t *testing.T) {
	for _, uri := range []string{"", "http://x", "mongodb://host:notaport"} {
		if _, err := Connect(t.Context(), uri, ConnectOptions{SkipPing: true}); !errs.IsInvalidArgument(err) {
			t.Errorf("Connect(%q): %v, want InvalidArgument", uri, err)
		}
	}
}

func TestDescribe(t *testing.T) {
	info, err := Describe(t.Context(), mongotest.Client(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Version == "" || info.MaxWireVersion == 0 {
		t.Errorf("Describe = %+v", info)
	}
	if os.Getenv(mongotest.EnvURI) == "" && !info.FerretDB {
		t.Errorf("the embedded server is not reported as FerretDB: %+v", info)
	}
}

func TestEnsureIndexesIsIdempotent(t *testing.T) {
	coll := mongotest.Database(t).Collection("c")
	want := []Index{
		{Name: "uid", Keys: bson.D{{Key: "metadata.uid", Value: 1}}, Unique: true},
		{Name: "ns_name", Keys: bson.D{{Key: "metadata.namespace", Value: 1}, {Key: "metadata.name", Value: int64(1)}}},
	}
	// Concurrently, as several processes starting at once would.
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- EnsureIndexes(t.Context(), coll, want...)
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatalf("EnsureIndexes: %v", err)
		}
	}
	if err := EnsureIndexes(t.Context(), coll, want...); err != nil {
		t.Fatalf("EnsureIndexes again: %v", err)
	}
	specs, err := coll.Indexes().ListSpecifications(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, s := range specs {
		names[s.Name]++
	}
	if names["uid"] != 1 || names["ns_name"] != 1 || len(specs) != 3 {
		t.Errorf("indexes after ensuring twice: %v", specs)
	}
	// The unique index works.
	ctx := t.Context()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "metadata", Value: bson.D{{Key: "uid", Value: "u"}}}}); err != nil {
		t.Fatal(err)
	}
	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}, {Key: "metadata", Value: bson.D{{Key: "uid", Value: "u"}}}})
	if !errs.IsAlreadyExists(Err(err)) {
		t.Errorf("a second document with the same uid: %v", err)
	}
	// A different index under a taken name is refused, and nothing is
	// dropped.
	err = EnsureIndexes(ctx, coll, Index{Name: "uid", Keys: bson.D{{Key: "metadata.other", Value: 1}}})
	if !errs.IsFailedPrecondition(err) {
		t.Errorf("conflicting index: %v, want FailedPrecondition", err)
	}
	err = EnsureIndexes(ctx, coll, Index{Name: "uid", Keys: bson.D{{Key: "metadata.uid", Value: 1}}})
	if !errs.IsFailedPrecondition(err) {
		t.Errorf("the same keys without uniqueness: %v, want FailedPrecondition", err)
	}
	if err := EnsureIndexes(ctx, coll, Index{Keys: bson.D{{Key: "a", Value: 1}}}); !errs.IsInvalidArgument(err) {
		t.Errorf("an index without a name: %v", err)
	}
}
