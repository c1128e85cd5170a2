package gun

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
)

// grpcServer starts a health service, with or without reflection, on
// 127.0.0.1.
func grpcServer(t *testing.T, withReflection bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	if withReflection {
		reflection.Register(s)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func checkGRPC(t *testing.T, g Gun) {
	t.Helper()
	cases := []struct {
		a     ammo.Ammo
		code  int32
		class aggregate.Class
	}{
		{ammo.Ammo{Call: "grpc.health.v1.Health/Check", Payload: []byte(`{"service":"up"}`)}, 0, aggregate.OK},
		{ammo.Ammo{Call: "/grpc.health.v1.Health/Check", Payload: []byte(`{"service":"nope"}`), Metadata: ammo.Headers{{Name: "X-Id", Value: "1"}}}, int32(errs.NotFound), aggregate.Status},
		{ammo.Ammo{Call: "grpc.health.v1.Health.Check"}, 0, aggregate.OK}, // empty service: overall health
		{ammo.Ammo{Call: "grpc.health.v1.Health/Check", Payload: []byte(`{"bogus":1}`)}, 0, aggregate.Other},
		{ammo.Ammo{Call: "grpc.health.v1.Health/Nope"}, 0, aggregate.Other},
		{ammo.Ammo{Call: "no.Such/Method"}, 0, aggregate.Other},
		{ammo.Ammo{Call: "grpc.health.v1.Health/Watch"}, 0, aggregate.Other}, // streaming
	}
	for _, c := range cases {
		s := shoot(g, &c.a)
		if s.Code != c.code || s.Class != c.class {
			t.Errorf("%s %s: code %d class %s err %v", c.a.Call, c.a.Payload, s.Code, s.Class, s.Err)
		}
		if c.class == aggregate.OK && (s.Proto != aggregate.GRPC || s.BytesIn == 0) {
			t.Errorf("%s: proto %d bytes in %d", c.a.Call, s.Proto, s.BytesIn)
		}
	}
}

func TestGRPCReflection(t *testing.T) {
	addr := grpcServer(t, true)
	checkGRPC(t, newGun(t, config.GunSpec{Type: "grpc", Target: addr}))
}

func TestGRPCDescriptorSet(t *testing.T) {
	addr := grpcServer(t, false)
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(healthpb.File_grpc_health_v1_health_proto),
	}}
	b, _ := proto.Marshal(set)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "health.pb"), b, 0o644)
	spec := config.GunSpec{Type: "grpc", Target: addr, DescriptorSet: "health.pb"}
	f, err := NewGRPC(context.Background(), &spec, files.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, _ := f.New(context.Background(), Env{})
	checkGRPC(t, g)

	// Without reflection and without a descriptor set the gun cannot start.
	if _, err := NewGRPC(context.Background(), &config.GunSpec{Type: "grpc", Target: addr}, files.Dir(dir)); err == nil {
		t.Fatal("a server without reflection was accepted without a descriptor set")
	}
}

func TestGRPCSpecErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "junk.pb"), []byte("not a descriptor"), 0o644)
	for _, c := range []struct {
		spec  config.GunSpec
		field string
	}{
		{config.GunSpec{Type: "grpc"}, "target"},
		{config.GunSpec{Type: "grpc", Target: "http://x:1"}, "target"},
		{config.GunSpec{Type: "grpc", Target: "x:1", H2C: true}, "h2c"},
		{config.GunSpec{Type: "grpc", Target: "x:1", DescriptorSet: "missing.pb"}, "descriptorSet"},
		{config.GunSpec{Type: "grpc", Target: "x:1", DescriptorSet: "junk.pb"}, "descriptorSet"},
	} {
		_, err := NewGRPC(context.Background(), &c.spec, files.Dir(dir))
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != c.field {
			t.Errorf("%+v: err %v, want InvalidArgument on %q", c.spec, err, c.field)
		}
	}
}
