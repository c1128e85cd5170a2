package config

import (
	"errors"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
)

func TestDecodeLinesLocate(t *testing.T) {
	text := `pools:
  - id: a
    gun:
      type: grpc
      target: 127.0.0.1:1
      descriptorSet: svc.pb
      options: {size: 3}
    ammo: {type: inline, requests: [{call: a.B/C}]}
    rps: [{type: once, times: 1}]
    instances: 1
`
	spec, lines, err := DecodeLines([]byte(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Pools[0].Gun.DescriptorSet != "svc.pb" {
		t.Fatalf("spec %+v", spec.Pools[0].Gun)
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{errs.Invalid("pools[0].gun.descriptorSet", "no such file"), "InvalidArgument: pools[0].gun.descriptorSet: line 6: no such file"},
		// A field below one the decoder saw as a whole: the line of that.
		{errs.Invalid("pools[0].gun.options.size", "too big"), "InvalidArgument: pools[0].gun.options.size: line 7: too big"},
		{errs.Invalid("pools[0].gun.tls.caFile", "missing"), "InvalidArgument: pools[0].gun.tls.caFile: line 3: missing"},
		{errs.WithField(errors.New("boom"), "pools[0].ammo"), "InvalidArgument: pools[0].ammo: line 8: boom"},
		// Not in the spec, or no field: unchanged.
		{errs.Invalid("share", "bad"), "InvalidArgument: share: bad"},
		{errs.New(errs.Unavailable, "down"), "Unavailable: down"},
		{errors.New("plain"), "plain"},
	} {
		if got := lines.Locate(c.err); got.Error() != c.want {
			t.Errorf("Locate(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if err := Lines(nil).Locate(errs.Invalid("pools[0]", "x")); err.Error() != "InvalidArgument: pools[0]: x" {
		t.Errorf("nil Lines: %v", err)
	}
	// Decode still names lines in its own errors.
	if _, err := Decode([]byte("pools:\n  - id: a\n    instances: -1\n"), nil); err == nil || errs.FieldOf(err) == "" {
		t.Fatalf("decode error %v", err)
	}
}
