package coordination

import (
	"sync"
	"time"

	"github.com/capstanhq/capstan/pkg/meta"
)

// versionClock remembers, for each object, the version last seen and when
// this process first saw it on its own monotonic clock. Expiry is judged
// only from these local times.
type versionClock struct {
	mu   sync.Mutex
	seen map[meta.Key]seenVersion
	now  func() time.Time
}

type seenVersion struct {
	uid, rv string
	at      time.Time
}

func newVersionClock() *versionClock {
	return &versionClock{seen: map[meta.Key]seenVersion{}, now: time.Now}
}

// observe records obj's version and returns when this process first saw
// it.
func (c *versionClock) observe(obj meta.Object) time.Time {
	m := obj.GetObjectMeta()
	k := m.Key()
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.seen[k]
	if ok && s.uid == m.UID && s.rv == m.ResourceVersion {
		return s.at
	}
	now := c.now()
	c.seen[k] = seenVersion{uid: m.UID, rv: m.ResourceVersion, at: now}
	return now
}

// seenAt returns when this process first saw obj's version, and false if
// the version it knows for obj's key is another one.
func (c *versionClock) seenAt(obj meta.Object) (time.Time, bool) {
	m := obj.GetObjectMeta()
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.seen[m.Key()]
	if !ok || s.uid != m.UID || s.rv != m.ResourceVersion {
		return time.Time{}, false
	}
	return s.at, true
}

// expiresIn returns how long until obj, unchanged, has been unchanged for
// d on this clock (≤ 0: already).
func (c *versionClock) expiresIn(obj meta.Object, d time.Duration) time.Duration {
	first := c.observe(obj)
	return d - c.now().Sub(first)
}

// forget drops what is known about key.
func (c *versionClock) forget(k meta.Key) {
	c.mu.Lock()
	delete(c.seen, k)
	c.mu.Unlock()
}
