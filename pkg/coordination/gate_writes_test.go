package coordination

import (
	"context"
	"time"

	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// The gate's Create/Update/UpdateStatus follow store.Writer's signatures.

// Create implements store.Writer.
func (g *gateStore) Create(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	start := time.Now()
	err := g.Store.Create(ctx, obj, opts...)
	g.record("create", obj, start, err)
	return err
}

// Update implements store.Writer.
func (g *gateStore) Update(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	start := time.Now()
	err := g.Store.Update(ctx, obj, opts...)
	g.record("update", obj, start, err)
	return err
}

// UpdateStatus implements store.Writer.
func (g *gateStore) UpdateStatus(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	start := time.Now()
	err := g.Store.UpdateStatus(ctx, obj, opts...)
	g.record("updateStatus", obj, start, err)
	return err
}
