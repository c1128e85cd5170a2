package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// informerSync starts an informer of the Item kind over lw and returns how
// long it took to list and sync want objects, and the heap it holds per
// cached object once synced (after a GC).
func informerSync(ctx context.Context, lw source.ListWatcher, want int) (time.Duration, float64, error) {
	before := heapAfterGC()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inf := source.NewInformer(lw, ItemKind, source.InformerOptions{})
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- inf.Run(ctx) }()
	if !inf.WaitForSync(ctx) {
		return 0, 0, fmt.Errorf("informer did not sync")
	}
	took := time.Since(t0)
	if got := inf.Len(); got != want {
		return 0, 0, fmt.Errorf("informer holds %d objects, want %d", got, want)
	}
	after := heapAfterGC()
	perObject := (float64(after) - float64(before)) / float64(want)
	runtime.KeepAlive(inf)
	cancel()
	if err := <-done; err != nil {
		return 0, 0, err
	}
	return took, perObject, nil
}

// listAll reads every object with the store's List in pages of pageSize
// (0: one page).
func listAll(ctx context.Context, st store.Reader, want int, pageSize int64) (time.Duration, error) {
	t0 := time.Now()
	n := 0
	cont := ""
	for {
		res, err := st.List(ctx, ItemKind, store.ListOptions{Limit: pageSize, Continue: cont})
		if err != nil {
			return 0, err
		}
		n += len(res.Items)
		if cont = res.Continue; cont == "" {
			break
		}
	}
	took := time.Since(t0)
	if n != want {
		return 0, fmt.Errorf("listed %d objects, want %d", n, want)
	}
	return took, nil
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func seconds(d time.Duration) float64 { return d.Seconds() }

// informerPageSize is source.InformerOptions.PageSize's default.
const informerPageSize = 1000

// finder is mongo.Collection.Find.
type finder = func(ctx context.Context, filter any, opts ...options.Lister[options.FindOptions]) (*mongo.Cursor, error)

// cursorRead reads every document of a collection with the driver's
// cursor, as a program without Capstan would, and returns how long it
// took. Documents are not decoded.
func cursorRead(ctx context.Context, find finder, want int) (time.Duration, error) {
	t0 := time.Now()
	cur, err := find(ctx, bson.D{})
	if err != nil {
		return 0, err
	}
	defer cur.Close(ctx)
	n := 0
	for cur.Next(ctx) {
		if len(cur.Current) == 0 {
			return 0, fmt.Errorf("empty document")
		}
		n++
	}
	if err := cur.Err(); err != nil {
		return 0, err
	}
	took := time.Since(t0)
	if n != want {
		return 0, fmt.Errorf("cursor read %d documents, want %d", n, want)
	}
	return took, nil
}
