package aggregate

import (
	"encoding/json"
	"fmt"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/capstanhq/capstan/pkg/errs"
)

// Histogram range: 1 µs to 1 hour at 3 significant digits.
const (
	histMin   = 1
	histMax   = int64(time.Hour / time.Microsecond)
	histDigit = 3
)

// Histogram is an HDR histogram of durations recorded in microseconds. Its
// JSON form carries the lossless compressed encoding ("hdr") next to
// readable quantiles, which are ignored when decoding.
type Histogram struct {
	h *hdr.Histogram
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdr.New(histMin, histMax, histDigit)}
}

// Record adds a duration given in nanoseconds; values beyond the range are
// clamped to it.
func (h *Histogram) Record(ns int64) {
	us := ns / 1000
	if us < 0 {
		us = 0
	}
	if us > histMax {
		us = histMax
	}
	_ = h.h.RecordValue(us)
}

// Count returns the number of recorded values.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Quantile returns the value at quantile q (0..100 percent).
func (h *Histogram) Quantile(percent float64) time.Duration {
	return time.Duration(h.h.ValueAtPercentile(percent)) * time.Microsecond
}

// Max returns the largest recorded value.
func (h *Histogram) Max() time.Duration { return time.Duration(h.h.Max()) * time.Microsecond }

// Min returns the smallest recorded value.
func (h *Histogram) Min() time.Duration { return time.Duration(h.h.Min()) * time.Microsecond }

// Mean returns the mean of the recorded values.
func (h *Histogram) Mean() time.Duration {
	return time.Duration(h.h.Mean() * float64(time.Microsecond))
}

// Merge adds every value of o.
func (h *Histogram) Merge(o *Histogram) {
	if o != nil {
		h.h.Merge(o.h)
	}
}

// Reset empties the histogram.
func (h *Histogram) Reset() { h.h.Reset() }

// Clone returns a copy.
func (h *Histogram) Clone() *Histogram { return &Histogram{h: h.h.Clone()} }

// Buckets returns the non-empty buckets in increasing order of value, as
// (upper bound, count) pairs, for distribution charts.
func (h *Histogram) Buckets() []Bucket {
	var out []Bucket
	for _, b := range h.h.Distribution() {
		if b.Count > 0 {
			out = append(out, Bucket{Upper: time.Duration(b.To) * time.Microsecond, Count: b.Count})
		}
	}
	return out
}

// Bucket is a range of a histogram.
type Bucket struct {
	// Upper is the bucket's highest value.
	Upper time.Duration
	// Count is the number of values in the bucket.
	Count int64
}

// Encode returns the HdrHistogram V2 compressed, base64 encoding.
func (h *Histogram) Encode() (string, error) {
	b, err := h.h.Encode(hdr.V2CompressedEncodingCookieBase)
	if err != nil {
		return "", errs.Wrap(errs.Internal, err, "encoding histogram")
	}
	return string(b), nil
}

// DecodeHistogram decodes the output of Encode.
func DecodeHistogram(s string) (*Histogram, error) {
	h, err := hdr.Decode([]byte(s))
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, err, "decoding histogram")
	}
	return &Histogram{h: h}, nil
}

type histJSON struct {
	Count int64  `json:"count"`
	Min   string `json:"min,omitempty"`
	Mean  string `json:"mean,omitempty"`
	P50   string `json:"p50,omitempty"`
	P90   string `json:"p90,omitempty"`
	P95   string `json:"p95,omitempty"`
	P99   string `json:"p99,omitempty"`
	P999  string `json:"p99.9,omitempty"`
	Max   string `json:"max,omitempty"`
	HDR   string `json:"hdr"`
}

// MarshalJSON writes quantiles and the lossless encoding.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	enc, err := h.Encode()
	if err != nil {
		return nil, err
	}
	j := histJSON{Count: h.Count(), HDR: enc}
	if j.Count > 0 {
		j.Min, j.Mean, j.Max = h.Min().String(), h.Mean().String(), h.Max().String()
		j.P50, j.P90, j.P95 = h.Quantile(50).String(), h.Quantile(90).String(), h.Quantile(95).String()
		j.P99, j.P999 = h.Quantile(99).String(), h.Quantile(99.9).String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON restores a histogram from its "hdr" field.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var j histJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	d, err := DecodeHistogram(j.HDR)
	if err != nil {
		return err
	}
	if d.Count() != j.Count {
		return fmt.Errorf("histogram count %d does not match its encoding's %d", j.Count, d.Count())
	}
	h.h = d.h
	return nil
}
