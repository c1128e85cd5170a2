package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
	"github.com/capstanhq/capstan/pkg/store/storetest"
)

func TestConformance(t *testing.T) {
	newStore := func(opts ...memory.Option) func(*testing.T, *store.Scheme) store.Store {
		return func(t *testing.T, scheme *store.Scheme) store.Store {
			s := memory.New(scheme, append([]memory.Option{memory.WithBookmarkInterval(50 * time.Millisecond)}, opts...)...)
			t.Cleanup(func() {
				if err := s.Close(context.Background()); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			return s
		}
	}
	storetest.Run(t, storetest.Harness{
		New:             newStore(),
		NewSmallHistory: newStore(memory.WithHistory(100)),
		EventTimeout:    10 * time.Second,
	})
}
