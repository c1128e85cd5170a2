package ammo

import (
	"io"
	"strconv"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
)

// Spec is the configuration of a pool's ammo.
type Spec struct {
	// Type is "inline" (Requests) or "file" (File).
	Type string `json:"type"`
	// Requests are the inline ammo.
	Requests []Ammo `json:"requests,omitempty"`
	// File is the path of an ammo file, relative to the config file's
	// directory (to the files directory of a LoadTest).
	File string `json:"file,omitempty"`
	// Format is the file's format: "jsonline" (default) or "uri".
	Format Format `json:"format,omitempty"`
	// Passes is the number of passes over the ammo; 0 loops forever.
	Passes int64 `json:"passes,omitempty"`
	// Limit caps the number of ammo handed out; 0 is no limit.
	Limit int64 `json:"limit,omitempty"`
	// Stream reads the file as the run goes instead of loading it first.
	Stream bool `json:"stream,omitempty"`
}

// Validate checks s without touching files; errors name the field.
func (s *Spec) Validate() error {
	if s.Passes < 0 {
		return errs.Invalid("passes", "must not be negative, got %d", s.Passes)
	}
	if s.Limit < 0 {
		return errs.Invalid("limit", "must not be negative, got %d", s.Limit)
	}
	switch s.Type {
	case "inline":
		if len(s.Requests) == 0 {
			return errs.Invalid("requests", "an inline ammo needs at least one request")
		}
		if s.File != "" {
			return errs.Invalid("file", "not allowed with type inline")
		}
		for i := range s.Requests {
			if err := validate(&s.Requests[i]); err != nil {
				return errs.Invalid(pathIndex("requests", i), "%v", err)
			}
		}
	case "file":
		if s.File == "" {
			return errs.Invalid("file", "a file ammo needs a file")
		}
		if len(s.Requests) > 0 {
			return errs.Invalid("requests", "not allowed with type file")
		}
		switch s.Format {
		case "", JSONLines, URI:
		default:
			return errs.Invalid("format", "unknown ammo format %q (want %q or %q)", s.Format, JSONLines, URI)
		}
	case "":
		return errs.Invalid("type", "required: inline or file")
	default:
		return errs.Invalid("type", "unknown ammo type %q (want inline or file)", s.Type)
	}
	return nil
}

func pathIndex(field string, i int) string {
	return field + "[" + strconv.Itoa(i) + "]"
}

// Open validates s and returns its provider, opening its file from fsys
// (files.Dir("") opens names as they are). The returned close function
// releases files and is never nil.
func Open(s *Spec, fsys files.FS) (Provider, func() error, error) {
	noop := func() error { return nil }
	if err := s.Validate(); err != nil {
		return nil, noop, err
	}
	lim := Limits{Passes: s.Passes, Limit: s.Limit}
	if s.Type == "inline" {
		m, err := NewMemory(s.Requests, lim)
		return m, noop, err
	}
	if fsys == nil {
		fsys = files.Dir("")
	}
	if s.Stream {
		st, err := newStream(s.File, func() (io.ReadCloser, error) { return fsys.Open(s.File) }, s.Format, lim)
		if err != nil {
			return nil, noop, errs.WithField(err, "file")
		}
		return st, st.Close, nil
	}
	f, err := fsys.Open(s.File)
	if err != nil {
		return nil, noop, errs.WithField(errs.Wrap(errs.InvalidArgument, err, "opening ammo"), "file")
	}
	defer f.Close()
	list, err := Load(f, s.Format)
	if err != nil {
		return nil, noop, errs.WithField(err, "file")
	}
	if len(list) == 0 {
		return nil, noop, errs.Invalid("file", "no ammo in %s", s.File)
	}
	m, err := NewMemory(list, lim)
	return m, noop, err
}
