package mongox

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Defaults of ConnectOptions.
const (
	// DefaultConnectTimeout bounds establishing one connection.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultServerSelectionTimeout bounds waiting for a usable server
	// before an operation fails with errs.Unavailable.
	DefaultServerSelectionTimeout = 15 * time.Second
	// DefaultMaxPoolSize limits connections per server.
	DefaultMaxPoolSize = 100
	// DefaultMaxConnIdleTime closes connections idle for longer.
	DefaultMaxConnIdleTime = 5 * time.Minute
	// DefaultHeartbeatInterval is how often the driver checks each server,
	// which bounds how fast it notices a restarted or failed-over server.
	DefaultHeartbeatInterval = 2 * time.Second
)

// ConnectOptions tune Connect. The zero value of every field selects its
// default; the URI's own options win over these defaults.
type ConnectOptions struct {
	// AppName is reported to the server (logs, currentOp).
	AppName string
	// ConnectTimeout bounds establishing one connection.
	ConnectTimeout time.Duration
	// ServerSelectionTimeout bounds waiting for a usable server.
	ServerSelectionTimeout time.Duration
	// MaxPoolSize limits connections per server.
	MaxPoolSize uint64
	// MinPoolSize keeps this many connections open per server.
	MinPoolSize uint64
	// MaxConnIdleTime closes connections idle for longer.
	MaxConnIdleTime time.Duration
	// HeartbeatInterval is how often the driver checks each server.
	HeartbeatInterval time.Duration
	// WriteConcern is the client's default write concern; nil means
	// majority.
	WriteConcern *writeconcern.WriteConcern
	// SkipPing returns without checking that a server answers.
	SkipPing bool
}

// ClientOptions returns driver options for uri with o's defaults applied
// under the URI's own settings.
func (o ConnectOptions) ClientOptions(uri string) *options.ClientOptions {
	co := options.Client().
		SetConnectTimeout(orDuration(o.ConnectTimeout, DefaultConnectTimeout)).
		SetServerSelectionTimeout(orDuration(o.ServerSelectionTimeout, DefaultServerSelectionTimeout)).
		SetMaxPoolSize(orUint(o.MaxPoolSize, DefaultMaxPoolSize)).
		SetMinPoolSize(o.MinPoolSize).
		SetMaxConnIdleTime(orDuration(o.MaxConnIdleTime, DefaultMaxConnIdleTime)).
		SetHeartbeatInterval(orDuration(o.HeartbeatInterval, DefaultHeartbeatInterval))
	wc := o.WriteConcern
	if wc == nil {
		wc = writeconcern.Majority()
	}
	co.SetWriteConcern(wc)
	if o.AppName != "" {
		co.SetAppName(o.AppName)
	}
	// ApplyURI last: settings in the connection string take precedence.
	return co.ApplyURI(uri)
}

// Connect connects to the deployment at uri and, unless SkipPing, checks
// that a server answers within ctx. A malformed URI is
// errs.InvalidArgument; an unreachable deployment errs.Unavailable (or
// errs.DeadlineExceeded when ctx ends first). The caller disconnects the
// client.
func Connect(ctx context.Context, uri string, o ConnectOptions) (*mongo.Client, error) {
	co := o.ClientOptions(uri)
	if err := co.Validate(); err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, err, "invalid MongoDB connection string")
	}
	client, err := mongo.Connect(co)
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, err, "invalid MongoDB client options")
	}
	if o.SkipPing {
		return client, nil
	}
	if err := client.Ping(ctx, readpref.Primary()); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, Errf(err, "connect to MongoDB")
	}
	return client, nil
}

// ServerInfo describes the server a client talks to.
type ServerInfo struct {
	// Version is the MongoDB version the server reports.
	Version string
	// FerretDB is set for FerretDB, which speaks the wire protocol without
	// change streams, transactions or wildcard indexes.
	FerretDB bool
	// ReplicaSet is the replica set name, empty for standalone servers.
	ReplicaSet string
	// Sharded is set when the client talks to mongos.
	Sharded bool
	// MaxWireVersion is the newest wire protocol version the server speaks.
	MaxWireVersion int32
}

// Describe asks the server (hello and buildInfo) what it is.
func Describe(ctx context.Context, client *mongo.Client) (ServerInfo, error) {
	admin := client.Database("admin")
	var info ServerInfo
	hello, err := admin.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Raw()
	if err != nil {
		return info, Errf(err, "hello")
	}
	if v, err := hello.LookupErr("setName"); err == nil {
		info.ReplicaSet, _ = v.StringValueOK()
	}
	if v, err := hello.LookupErr("msg"); err == nil {
		s, _ := v.StringValueOK()
		info.Sharded = s == "isdbgrid"
	}
	if v, err := hello.LookupErr("maxWireVersion"); err == nil {
		if n, ok := v.AsInt64OK(); ok {
			info.MaxWireVersion = int32(n)
		}
	}
	build, err := admin.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Raw()
	if err != nil {
		return info, Errf(err, "buildInfo")
	}
	if v, err := build.LookupErr("version"); err == nil {
		info.Version, _ = v.StringValueOK()
	}
	if _, err := build.LookupErr("ferretdbVersion"); err == nil {
		info.FerretDB = true
	} else if _, err := build.LookupErr("ferretdb"); err == nil {
		info.FerretDB = true
	}
	return info, nil
}

func orDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func orUint(n, def uint64) uint64 {
	if n > 0 {
		return n
	}
	return def
}
