package ammo

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
)

// FuzzJSONLines checks that any input decodes or fails cleanly, and that
// decoded ammo survives a JSON round trip.
func FuzzJSONLines(f *testing.F) {
	f.Add([]byte(`{"uri":"/","headers":{"A":"b"}}`))
	fuzzDecoder(f, JSONLines)
}

// FuzzURI checks the uri format decoder the same way.
func FuzzURI(f *testing.F) {
	f.Add([]byte("[Host: a]\n/x tag\n"))
	fuzzDecoder(f, URI)
}

func fuzzDecoder(f *testing.F, format Format) {
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := NewDecoder(bytes.NewReader(in), format)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 1000; i++ {
			var a Ammo
			err := d.Decode(&a)
			if err == io.EOF {
				return
			}
			if err != nil {
				return
			}
			if err := validate(&a); err != nil {
				t.Fatalf("decoded ammo fails validation: %v", err)
			}
			b, err := json.Marshal(&a)
			if err != nil {
				t.Fatal(err)
			}
			var back Ammo
			if err := decodeJSONLine(b, &back); err != nil {
				t.Fatalf("round trip of %s: %v", b, err)
			}
		}
	})
}
