package gun

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
)

// BenchmarkLeanShoot measures a keep-alive shot of the lean gun against a
// server that allocates nothing per request.
func BenchmarkLeanShoot(b *testing.B) {
	g := newGun(b, config.GunSpec{Type: "http", Target: staticServer(b)})
	benchShoot(b, g)
}

// BenchmarkStdShoot measures a keep-alive shot of the net/http gun, with
// and without the phase trace.
func BenchmarkStdShoot(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	for _, phases := range []bool{false, true} {
		name := "plain"
		if phases {
			name = "phases"
		}
		b.Run(name, func(b *testing.B) {
			spec := config.GunSpec{Type: "http", Target: srv.URL, Client: "std"}
			f, err := NewRegistry().Build(context.Background(), &spec, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			g, err := f.New(context.Background(), Env{Phases: phases})
			if err != nil {
				b.Fatal(err)
			}
			benchShoot(b, g)
		})
	}
}

// benchShoot measures keep-alive shots of g at "/p", failing on the first
// that is not OK.
func benchShoot(b *testing.B, g Gun) {
	b.Helper()
	a := &ammo.Ammo{URI: "/p"}
	ctx := context.Background()
	var s Shot
	b.ReportAllocs()
	for b.Loop() {
		s.Reset()
		s.Ammo = a
		g.Shoot(ctx, &s)
		if s.Class != aggregate.OK {
			b.Fatal(s.Class, s.Err)
		}
	}
}
