package changes

import (
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/capstanhq/capstan/pkg/errs"
)

func TestPositionRoundTrip(t *testing.T) {
	tok, _ := bson.Marshal(bson.D{{Key: "_data", Value: "8263A1B2C3000000012B022C0100296E5A1004"}})
	for _, p := range []Position{
		OplogPosition(bson.Timestamp{}),
		OplogPosition(bson.Timestamp{T: 1795511516, I: 2}),
		{mode: ModeOplog, ts: bson.Timestamp{T: 4294967295, I: 4294967295}, sub: 7},
		TokenPosition(tok),
	} {
		s := p.String()
		q, err := ParsePosition(s)
		if err != nil {
			t.Fatalf("ParsePosition(%q): %v", s, err)
		}
		if q != p {
			t.Errorf("ParsePosition(%q) = %+v, want %+v", s, q, p)
		}
	}
	if (Position{}).String() != "" || !(Position{}).IsZero() {
		t.Errorf("the zero Position should print empty and be zero")
	}
}

func TestParsePositionRejectsGarbage(t *testing.T) {
	for _, s := range []string{
		"", "o:", "o:1", "o:1.", "o:.1", "o:1.2.0", "o:1.2.3.4", "o:-1.2", "o:+1.2", "o:01.2", "o:1.02",
		"o:4294967296.0", "o:1.2 ", "c:", "c:%%%", "c:AAAA", "x:1.2", "not-a-revision", "-1", "\x00",
	} {
		_, err := ParsePosition(s)
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "revision" {
			t.Errorf("ParsePosition(%q) = %v, want InvalidArgument on revision", s, err)
		}
	}
}

func TestComparePositions(t *testing.T) {
	a := OplogPosition(bson.Timestamp{T: 10, I: 1})
	b := OplogPosition(bson.Timestamp{T: 10, I: 2})
	inA1 := Position{mode: ModeOplog, ts: a.ts, sub: 1}
	inA2 := Position{mode: ModeOplog, ts: a.ts, sub: 2}
	ordered := []Position{OplogPosition(bson.Timestamp{}), inA1, inA2, a, b, OplogPosition(bson.Timestamp{T: 11})}
	for i := range ordered {
		for j := range ordered {
			c, ok := ordered[i].Compare(ordered[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if !ok || c != want {
				t.Errorf("Compare(%s, %s) = %d %v, want %d", ordered[i], ordered[j], c, ok, want)
			}
		}
	}
	if _, ok := a.Compare(TokenPosition(bson.Raw{5, 0, 0, 0, 0})); ok {
		t.Errorf("positions of different modes compare")
	}
}
