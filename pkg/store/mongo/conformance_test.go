package mongo

import (
	"context"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/embedded"
	"github.com/capstanhq/capstan/pkg/store/mongo/changes"
	"github.com/capstanhq/capstan/pkg/store/storetest"
)

func TestConformance(t *testing.T) {
	client := testClient(t)
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T, scheme *store.Scheme) store.Store {
			st, err := New(context.Background(), client, scheme, Options{Database: testDatabase(t), WatchMode: WatchOplog, BookmarkInterval: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close(context.Background()) })
			return st
		},
		NewSmallHistory: func(t *testing.T, scheme *store.Scheme) store.Store {
			srv, err := embedded.New(embedded.Options{DataDir: t.TempDir(), Addr: "127.0.0.1:0", OplogSize: 512 << 10, CleanupInterval: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Stop(context.Background()) })
			st, err := Open(context.Background(), srv.URI(), scheme, Options{Database: "small", WatchMode: WatchOplog, Changes: changes.Options{History: 16}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close(context.Background()) })
			return st
		},
		EventTimeout: eventTimeout,
	})
}
