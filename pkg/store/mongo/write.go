package mongo

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
)

// Create implements store.Writer: one insert; a taken _id is
// errs.AlreadyExists.
func (s *Store) Create(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	wo, err := store.ApplyWriteOptions(opts)
	if err != nil {
		return err
	}
	kind, err := s.scheme.KindOf(obj)
	if err != nil {
		return err
	}
	m := obj.GetObjectMeta()
	saved := *m
	if err := kind.PrepareCreate(obj); err != nil {
		*m = saved
		return err
	}
	store.ApplyFence(obj, wo.Fence)
	m.ResourceVersion = "1"
	key := m.Key()
	d, err := encodeObject(obj, key.String())
	if err != nil {
		*m = saved
		return err
	}
	coll, err := s.collection(ctx, kind)
	if err != nil {
		*m = saved
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if _, err := coll.InsertOne(ctx, d.raw); err != nil {
		*m = saved
		if mongo.IsDuplicateKeyError(err) {
			return store.AlreadyExistsError(kind.Name, key)
		}
		return mongox.Errf(err, "create %s %s", kind.Name, key)
	}
	s.specs.put(m.UID, m.ResourceVersion, d.specHash)
	return nil
}

// Update implements store.Writer.
//
// The common case is one replace whose filter pins everything the stored
// object contributes to the result: resourceVersion, uid, generation,
// creation time, no deletion mark, the status (by hash) and whether the
// spec changed (by hash, which decides the generation). The spec hash of
// the version being replaced usually comes from what this store last read
// or wrote; without it the store guesses "changed", then "unchanged".
// When the filter misses (a stale version, a client that changed store-
// owned fields or the status, a deletion in progress), the store reads
// the object, classifies the miss (NotFound, Conflict) and otherwise
// applies Kind.MergeUpdate with a compare-and-swap on the version read.
func (s *Store) Update(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	wo, err := store.ApplyWriteOptions(opts)
	if err != nil {
		return err
	}
	kind, err := s.scheme.KindOf(obj)
	if err != nil {
		return err
	}
	if err := kind.Validate(obj); err != nil {
		return err
	}
	m := obj.GetObjectMeta()
	coll, err := s.collection(ctx, kind)
	if err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if wo.Fence == nil && m.ResourceVersion != "" && m.UID != "" && m.Generation > 0 && !m.CreationTimestamp.IsZero() && m.DeletionTimestamp == nil {
		done, err := s.updateFast(ctx, coll, kind, obj)
		if done || err != nil {
			return err
		}
	}
	return s.updateSlow(ctx, coll, kind, obj, wo.Fence)
}

// updateFast tries the one-round-trip Update; done is false when its
// filter missed.
func (s *Store) updateFast(ctx context.Context, coll *mongo.Collection, kind *store.Kind, obj meta.Object) (bool, error) {
	m := obj.GetObjectMeta()
	key := m.Key()
	rv := m.ResourceVersion
	n, err := meta.ParseResourceVersion(rv)
	if err != nil {
		return false, err
	}
	newRV := meta.FormatResourceVersion(n + 1)
	ct, ok := storedTime(m.CreationTimestamp)
	if !ok {
		return false, nil
	}
	t, err := treeOf(obj)
	if err != nil {
		return false, err
	}
	h, err := t.specHash()
	if err != nil {
		return false, err
	}
	guesses := []bool{true, false} // spec changed?
	if known, ok := s.specs.get(m.UID, rv); ok {
		guesses = []bool{known != h}
	}
	t.setMeta("resourceVersion", newRV)
	for _, changed := range guesses {
		gen := m.Generation
		var specCond any = h
		if changed {
			gen++
			specCond = bson.D{{Key: "$ne", Value: h}}
		}
		t.setMeta("generation", json.Number(strconv.FormatInt(gen, 10)))
		d, err := t.build(key.String())
		if err != nil {
			return false, err
		}
		filter := bson.D{
			{Key: fieldID, Value: key.String()},
			{Key: "metadata.resourceVersion", Value: rv},
			{Key: "metadata.uid", Value: m.UID},
			{Key: "metadata.generation", Value: m.Generation},
			{Key: "metadata.creationTimestamp", Value: ct},
			{Key: "metadata.deletionTimestamp", Value: bson.D{{Key: "$exists", Value: false}}},
			fencesCondition(m.Fences),
			{Key: fieldStatusHash, Value: d.statusHash},
			{Key: fieldSpecHash, Value: specCond},
		}
		res, err := coll.ReplaceOne(ctx, filter, d.raw)
		if err != nil {
			return true, mongox.Errf(err, "update %s %s", kind.Name, key)
		}
		if res.MatchedCount == 1 {
			m.ResourceVersion = newRV
			m.Generation = gen
			s.specs.put(m.UID, newRV, h)
			return true, nil
		}
	}
	return false, nil
}

// updateSlow is Update by read, Kind.MergeUpdate and compare-and-swap.
func (s *Store) updateSlow(ctx context.Context, coll *mongo.Collection, kind *store.Kind, obj meta.Object, fence *store.Fence) error {
	m := obj.GetObjectMeta()
	key := m.Key()
	for attempt := 0; ; attempt++ {
		stored, _, err := s.read(ctx, coll, kind, key)
		if err != nil {
			return err
		}
		sm := stored.GetObjectMeta()
		if m.ResourceVersion != "" && m.ResourceVersion != sm.ResourceVersion {
			return store.ConflictError(kind.Name, key, m.ResourceVersion, sm.ResourceVersion)
		}
		if err := store.CheckFence(stored, fence); err != nil {
			return err
		}
		out, err := kind.MergeUpdate(stored, obj)
		if err != nil {
			return err
		}
		store.ApplyFence(out, fence)
		done, err := s.swap(ctx, coll, kind, stored, out)
		if done || err != nil {
			if err == nil {
				assign(obj, out)
			}
			return err
		}
		if err := retryPause(ctx, attempt); err != nil {
			return err
		}
	}
}

// swap replaces the stored version (stored) by out with
// the next resourceVersion, or deletes it when out is being deleted and
// has no finalizers left; done is false when another write came first.
func (s *Store) swap(ctx context.Context, coll *mongo.Collection, kind *store.Kind, stored, out meta.Object) (bool, error) {
	sm, om := stored.GetObjectMeta(), out.GetObjectMeta()
	key := sm.Key()
	n, err := meta.ParseResourceVersion(sm.ResourceVersion)
	if err != nil {
		return false, errs.Wrap(errs.DataLoss, err, "stored %s %s", kind.Name, key)
	}
	om.ResourceVersion = meta.FormatResourceVersion(n + 1)
	filter := bson.D{
		{Key: fieldID, Value: key.String()},
		{Key: "metadata.resourceVersion", Value: sm.ResourceVersion},
		{Key: "metadata.uid", Value: sm.UID},
	}
	if om.DeletionTimestamp != nil && len(om.Finalizers) == 0 {
		res, err := coll.DeleteOne(ctx, filter)
		if err != nil {
			return false, mongox.Errf(err, "delete %s %s", kind.Name, key)
		}
		return res.DeletedCount == 1, nil
	}
	d, err := encodeObject(out, key.String())
	if err != nil {
		return false, err
	}
	res, err := coll.ReplaceOne(ctx, filter, d.raw)
	if err != nil {
		return false, mongox.Errf(err, "update %s %s", kind.Name, key)
	}
	if res.MatchedCount != 1 {
		return false, nil
	}
	s.specs.put(om.UID, om.ResourceVersion, d.specHash)
	return true, nil
}

// UpdateStatus implements store.Writer. With a resourceVersion it is one
// findAndModify that sets the status (and the next version) where the
// version matches and the object stays within store.MaxObjectBytes, and
// returns the result; otherwise, or when that misses, the store reads the
// object, classifies the miss and applies Kind.MergeStatus with a
// compare-and-swap.
func (s *Store) UpdateStatus(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	wo, err := store.ApplyWriteOptions(opts)
	if err != nil {
		return err
	}
	kind, err := s.scheme.KindOf(obj)
	if err != nil {
		return err
	}
	m := obj.GetObjectMeta()
	key := m.Key()
	id, err := documentID(kind, key)
	if err != nil {
		return err
	}
	n, err := meta.ParseResourceVersion(m.ResourceVersion)
	if err != nil {
		return err
	}
	st, err := encodeStatus(obj)
	if err != nil {
		return err
	}
	if st.jsonBytes > store.MaxObjectBytes {
		return errs.Invalid("status", "status is %d bytes encoded, more than the object limit of %d", st.jsonBytes, store.MaxObjectBytes)
	}
	coll, err := s.collection(ctx, kind)
	if err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if rv := m.ResourceVersion; rv != "" && wo.Fence == nil {
		newRV := meta.FormatResourceVersion(n + 1)
		filter := bson.D{
			{Key: fieldID, Value: id},
			{Key: "metadata.resourceVersion", Value: rv},
		}
		if m.UID != "" {
			filter = append(filter, bson.E{Key: "metadata.uid", Value: m.UID})
		}
		budget := store.MaxObjectBytes - st.jsonBytes
		if u, ok := obj.(*meta.Unstructured); ok {
			budget -= kindOverhead + jsonStringLen(u.Kind) // counted by the size limit, not stored
		}
		filter = append(filter, bson.E{Key: fieldRestBytes, Value: bson.D{{Key: "$lte", Value: int64(budget)}}})
		set := bson.D{
			{Key: "metadata.resourceVersion", Value: newRV},
			{Key: fieldStatusHash, Value: st.hash},
		}
		update := bson.D{}
		if st.present {
			set = append(set, bson.E{Key: "status", Value: st.value})
		} else {
			update = append(update, bson.E{Key: "$unset", Value: bson.D{{Key: "status", Value: ""}}})
		}
		update = append(update,
			bson.E{Key: "$set", Value: set},
			bson.E{Key: "$inc", Value: bson.D{{Key: fieldRestBytes, Value: int64(len(newRV) - len(rv))}}})
		raw, err := coll.FindOneAndUpdate(ctx, filter, update, options.FindOneAndUpdate().SetReturnDocument(options.After)).Raw()
		switch {
		case err == nil:
			if err := decodeObject(raw, kind, obj); err != nil {
				return err
			}
			s.remember(raw)
			return nil
		case !errors.Is(err, mongo.ErrNoDocuments):
			return mongox.Errf(err, "update status of %s %s", kind.Name, key)
		}
	}
	for attempt := 0; ; attempt++ {
		stored, _, err := s.read(ctx, coll, kind, key)
		if err != nil {
			return err
		}
		sm := stored.GetObjectMeta()
		if m.ResourceVersion != "" && m.ResourceVersion != sm.ResourceVersion {
			return store.ConflictError(kind.Name, key, m.ResourceVersion, sm.ResourceVersion)
		}
		if err := store.CheckFence(stored, wo.Fence); err != nil {
			return err
		}
		out, err := kind.MergeStatus(stored, obj)
		if err != nil {
			return err
		}
		if wo.Fence != nil {
			store.ApplyFence(out, wo.Fence)
		}
		done, err := s.swap(ctx, coll, kind, stored, out)
		if done || err != nil {
			if err == nil {
				assign(obj, out)
			}
			return err
		}
		if err := retryPause(ctx, attempt); err != nil {
			return err
		}
	}
}

// Delete implements store.Writer. An object without finalizers goes in
// one findAndModify that also checks the preconditions; otherwise the
// store reads it, checks the preconditions and marks it with a
// deletionTimestamp (once) by compare-and-swap.
func (s *Store) Delete(ctx context.Context, obj meta.Object, opts ...store.DeleteOption) error {
	kind, err := s.scheme.KindOf(obj)
	if err != nil {
		return err
	}
	key := meta.KeyOf(obj)
	id, err := documentID(kind, key)
	if err != nil {
		return err
	}
	p := store.ApplyDeleteOptions(opts).Preconditions
	coll, err := s.collection(ctx, kind)
	if err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	filter := bson.D{
		{Key: fieldID, Value: id},
		{Key: "metadata.finalizers", Value: bson.D{{Key: "$exists", Value: false}}},
	}
	if p.UID != "" {
		filter = append(filter, bson.E{Key: "metadata.uid", Value: p.UID})
	}
	if p.ResourceVersion != "" {
		filter = append(filter, bson.E{Key: "metadata.resourceVersion", Value: p.ResourceVersion})
	}
	raw, err := coll.FindOneAndDelete(ctx, filter).Raw()
	switch {
	case err == nil:
		return decodeObject(raw, kind, obj)
	case !errors.Is(err, mongo.ErrNoDocuments):
		return mongox.Errf(err, "delete %s %s", kind.Name, key)
	}
	for attempt := 0; ; attempt++ {
		stored, _, err := s.read(ctx, coll, kind, key)
		if err != nil {
			return err
		}
		if err := store.CheckPreconditions(stored, p); err != nil {
			return err
		}
		sm := stored.GetObjectMeta()
		switch {
		case sm.DeletionTimestamp != nil:
			assign(obj, stored)
			return nil
		case len(sm.Finalizers) == 0:
			res, err := coll.DeleteOne(ctx, bson.D{
				{Key: fieldID, Value: id},
				{Key: "metadata.resourceVersion", Value: sm.ResourceVersion},
				{Key: "metadata.uid", Value: sm.UID},
			})
			if err != nil {
				return mongox.Errf(err, "delete %s %s", kind.Name, key)
			}
			if res.DeletedCount == 1 {
				assign(obj, stored)
				return nil
			}
		default:
			out := meta.DeepCopy(stored)
			now := meta.Now()
			out.GetObjectMeta().DeletionTimestamp = &now
			done, err := s.swap(ctx, coll, kind, stored, out)
			if err != nil {
				return err
			}
			if done {
				assign(obj, out)
				return nil
			}
		}
		if err := retryPause(ctx, attempt); err != nil {
			return err
		}
	}
}

// read returns the stored object with key and its document.
func (s *Store) read(ctx context.Context, coll *mongo.Collection, kind *store.Kind, key meta.Key) (meta.Object, bson.Raw, error) {
	raw, err := s.fetch(ctx, coll, kind, key)
	if err != nil {
		return nil, nil, err
	}
	obj := kind.New()
	if err := decodeObject(raw, kind, obj); err != nil {
		return nil, nil, err
	}
	s.remember(raw)
	return obj, raw, nil
}

// fetch returns the stored document with key.
func (s *Store) fetch(ctx context.Context, coll *mongo.Collection, kind *store.Kind, key meta.Key) (bson.Raw, error) {
	raw, err := coll.FindOne(ctx, bson.D{{Key: fieldID, Value: key.String()}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, store.NotFoundError(kind.Name, key)
	}
	if err != nil {
		return nil, mongox.Errf(err, "get %s %s", kind.Name, key)
	}
	return raw, nil
}

// retryPause waits before another compare-and-swap attempt: not at all at
// first, then a short random while that grows with the attempts.
func retryPause(ctx context.Context, attempt int) error {
	if err := ctx.Err(); err != nil {
		return errs.Wrap(errs.CodeOf(err), err, "retrying a write")
	}
	if attempt < 2 {
		return nil
	}
	d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 7)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "retrying a write")
	case <-t.C:
		return nil
	}
}

// assign sets dst to src (same type), which the caller hands over.
func assign(dst, src meta.Object) {
	if du, ok := dst.(*meta.Unstructured); ok {
		*du = *src.(*meta.Unstructured)
		return
	}
	reflect.ValueOf(dst).Elem().Set(reflect.ValueOf(src).Elem())
}

// storedTime returns how the store writes t (a BSON date for a UTC
// millisecond time), for filters; ok is false for a time it cannot write.
func storedTime(t time.Time) (any, bool) {
	js, err := t.MarshalJSON()
	if err != nil {
		return nil, false
	}
	return timeValue(js)
}

// fencesCondition pins the fences a fast Update writes to the stored
// ones (they are store-owned: a client that changed them goes the slow
// way, which keeps the stored ones).
func fencesCondition(fences map[string]int64) bson.E {
	if len(fences) == 0 {
		return bson.E{Key: "metadata.fences", Value: bson.D{{Key: "$exists", Value: false}}}
	}
	doc := make(bson.D, 0, len(fences))
	for _, k := range sortedKeys(fences) {
		doc = append(doc, bson.E{Key: escapeKey(k), Value: fences[k]})
	}
	return bson.E{Key: "metadata.fences", Value: doc}
}
