package gun

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
)

// NewGRPC is the constructor of the grpc gun. It connects to the target,
// loads the service descriptors (from spec.DescriptorSet, or from the
// server's reflection service) and returns a factory whose guns make unary
// calls named by the ammo's Call ("package.Service/Method") with its JSON
// Payload and Metadata.
func NewGRPC(ctx context.Context, spec *config.GunSpec, fsys files.FS) (Factory, error) {
	if err := rejectFields(spec, "grpc", map[string]bool{
		"steps": len(spec.Steps) > 0, "http2": spec.HTTP2, "h2c": spec.H2C, "client": spec.Client != "",
		"options": len(spec.Options) > 0,
	}); err != nil {
		return nil, err
	}
	if spec.Target == "" || strings.Contains(spec.Target, "://") {
		return nil, errs.Invalid("target", "want host:port, got %q", spec.Target)
	}
	timeout := spec.Timeout.D()
	if timeout < 0 {
		return nil, errs.Invalid("timeout", "must not be negative")
	}
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	connectTimeout := spec.ConnectTimeout.D()
	if connectTimeout <= 0 {
		connectTimeout = timeout
	}
	creds := insecure.NewCredentials()
	if spec.TLS != nil {
		tc, err := tlsConfig(spec.TLS, fsys)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(spec.Target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, errs.Invalid("target", "%v", err)
	}
	f := &grpcFactory{conn: conn, timeout: timeout, methods: map[string]*grpcMethod{}}
	for _, h := range spec.Headers {
		f.md = append(f.md, strings.ToLower(h.Name), h.Value)
	}
	if spec.DescriptorSet != "" {
		f.files, err = loadDescriptorSet(fsys, spec.DescriptorSet)
	} else {
		rctx, cancel := context.WithTimeout(ctx, connectTimeout)
		f.files, err = reflectFiles(rctx, conn)
		cancel()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return f, nil
}

func loadDescriptorSet(fsys files.FS, name string) (*protoregistry.Files, error) {
	b, err := files.ReadFile(fsys, name)
	if err != nil {
		return nil, errs.Field(errs.InvalidArgument, "descriptorSet", "%v", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, errs.Field(errs.InvalidArgument, "descriptorSet", "not a FileDescriptorSet: %v", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, errs.Field(errs.InvalidArgument, "descriptorSet", "%v (was it built with --include_imports?)", err)
	}
	return files, nil
}

// reflectFiles asks the server's reflection service for every service's
// file and their dependencies.
func reflectFiles(ctx context.Context, conn *grpc.ClientConn) (*protoregistry.Files, error) {
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, reflectionError(errs.Unavailable, err, "")
	}
	defer stream.CloseSend()
	ask := func(req *rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error) {
		if err := stream.Send(req); err != nil {
			return nil, reflectionError(errs.Unavailable, err, "")
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, reflectionError(errs.Unavailable, err, "")
		}
		if e := resp.GetErrorResponse(); e != nil {
			return nil, reflectionError(errs.Code(e.ErrorCode), nil, e.ErrorMessage)
		}
		return resp, nil
	}
	resp, err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"}})
	if err != nil {
		return nil, err
	}
	protos := map[string]*descriptorpb.FileDescriptorProto{}
	add := func(r *rpb.ServerReflectionResponse) error {
		for _, raw := range r.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(raw, fd); err != nil {
				return reflectionError(errs.Internal, err, "bad descriptor")
			}
			protos[fd.GetName()] = fd
		}
		return nil
	}
	for _, svc := range resp.GetListServicesResponse().GetService() {
		if strings.HasPrefix(svc.Name, "grpc.reflection.") {
			continue
		}
		r, err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: svc.Name}})
		if err != nil {
			return nil, err
		}
		if err := add(r); err != nil {
			return nil, err
		}
	}
	// Fetch missing dependencies until the set is closed.
	for {
		var missing []string
		for _, fd := range protos {
			for _, dep := range fd.GetDependency() {
				if _, ok := protos[dep]; !ok {
					missing = append(missing, dep)
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		for _, name := range missing {
			if _, ok := protos[name]; ok {
				continue
			}
			r, err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: name}})
			if err != nil {
				return nil, err
			}
			if err := add(r); err != nil {
				return nil, err
			}
			if _, ok := protos[name]; !ok {
				return nil, reflectionError(errs.Internal, nil, "did not return "+name)
			}
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range protos {
		set.File = append(set.File, fd)
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, reflectionError(errs.Internal, err, "building descriptors")
	}
	return files, nil
}

// reflectionError is an error of the target's reflection service, naming
// the field "target".
func reflectionError(code errs.Code, cause error, msg string) error {
	m := "server reflection"
	if msg != "" {
		m += ": " + msg
	}
	return &errs.Error{Code: code, Field: "target", Message: m, Cause: cause}
}

type grpcMethod struct {
	path    string // "/pkg.Service/Method"
	in, out protoreflect.MessageDescriptor
	err     error
}

type grpcFactory struct {
	conn    *grpc.ClientConn
	files   *protoregistry.Files
	timeout time.Duration
	md      []string

	mu      sync.RWMutex
	methods map[string]*grpcMethod
}

func (f *grpcFactory) New(context.Context, Env) (Gun, error) {
	return &grpcGun{f: f, cache: map[string]*grpcMethod{}}, nil
}

func (f *grpcFactory) Close() error { return f.conn.Close() }

// method resolves "package.Service/Method" (a leading slash is allowed).
func (f *grpcFactory) method(call string) *grpcMethod {
	f.mu.RLock()
	m, ok := f.methods[call]
	f.mu.RUnlock()
	if ok {
		return m
	}
	m = &grpcMethod{}
	name := strings.TrimPrefix(call, "/")
	svc, meth, found := strings.Cut(name, "/")
	if !found {
		if i := strings.LastIndexByte(name, '.'); i > 0 {
			svc, meth, found = name[:i], name[i+1:], true
		}
	}
	if !found {
		m.err = errs.Invalid("call", "want package.Service/Method, got %q", call)
	} else if d, err := f.files.FindDescriptorByName(protoreflect.FullName(svc)); err != nil {
		m.err = errs.New(errs.NotFound, "call %q: service %s not found", call, svc)
	} else if sd, ok := d.(protoreflect.ServiceDescriptor); !ok {
		m.err = errs.New(errs.NotFound, "call %q: %s is not a service", call, svc)
	} else if md := sd.Methods().ByName(protoreflect.Name(meth)); md == nil {
		m.err = errs.New(errs.NotFound, "call %q: method %s not found", call, meth)
	} else if md.IsStreamingClient() || md.IsStreamingServer() {
		m.err = errs.New(errs.Unimplemented, "call %q: only unary methods are supported", call)
	} else {
		m.path, m.in, m.out = "/"+svc+"/"+meth, md.Input(), md.Output()
	}
	f.mu.Lock()
	f.methods[call] = m
	f.mu.Unlock()
	return m
}

type grpcGun struct {
	f     *grpcFactory
	cache map[string]*grpcMethod
}

func (g *grpcGun) Close() error { return nil }

func (g *grpcGun) Shoot(ctx context.Context, s *Shot) {
	a := s.Ammo
	m, ok := g.cache[a.Call]
	if !ok {
		m = g.f.method(a.Call)
		g.cache[a.Call] = m
	}
	if m.err != nil {
		s.Err, s.Class = m.err, aggregate.Other
		return
	}
	req := dynamicpb.NewMessage(m.in)
	if len(a.Payload) > 0 {
		if err := protojson.Unmarshal(a.Payload, req); err != nil {
			s.Err, s.Class = errs.Invalid("payload", "%v", err), aggregate.Other
			return
		}
	}
	resp := dynamicpb.NewMessage(m.out)
	cctx, cancel := context.WithTimeout(ctx, g.f.timeout)
	defer cancel()
	if len(g.f.md) > 0 || len(a.Metadata) > 0 {
		kv := append([]string(nil), g.f.md...)
		for _, h := range a.Metadata {
			kv = append(kv, strings.ToLower(h.Name), h.Value)
		}
		cctx = metadata.NewOutgoingContext(cctx, metadata.Pairs(kv...))
	}
	s.BytesOut = int64(proto.Size(req))
	err := g.f.conn.Invoke(cctx, m.path, req, resp)
	s.Proto = aggregate.GRPC
	st := status.Convert(err)
	s.Code = int32(st.Code())
	switch {
	case err == nil:
		s.BytesIn = int64(proto.Size(resp))
	case ctx.Err() != nil:
		s.Err, s.Class = ctx.Err(), aggregate.Canceled
	case st.Code() == codes.DeadlineExceeded:
		s.Err, s.Class = err, aggregate.Timeout
	default:
		s.Err, s.Class = err, aggregate.Status
	}
}
