package config

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
)

// FuzzDecode checks that no input panics the decoder, that every error is
// InvalidArgument, and that an accepted spec survives a JSON round trip.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(base))
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := Decode(data, nil)
		if err != nil {
			if !errs.IsInvalidArgument(err) {
				t.Fatalf("error without InvalidArgument: %v", err)
			}
			return
		}
		js, err := json.Marshal(spec)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := Decode(js, nil)
		if err != nil {
			t.Fatalf("accepted spec's JSON rejected: %v\n%s", err, js)
		}
		if !reflect.DeepEqual(back, spec) {
			t.Fatalf("round trip differs:\n%s", js)
		}
	})
}
