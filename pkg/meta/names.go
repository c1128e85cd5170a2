package meta

import (
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// The checks below accept exactly what k8s.io/apimachinery's regular
// expressions accept, without running them: validation runs on every
// write. On failure the apimachinery function runs for its messages.

func isAlnumLower(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isAlnum(c byte) bool { return isAlnumLower(c) || c >= 'A' && c <= 'Z' }

// isDNSLabelPart matches [a-z0-9]([-a-z0-9]*[a-z0-9])?.
func isDNSLabelPart(s string) bool {
	if s == "" || !isAlnumLower(s[0]) || !isAlnumLower(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !isAlnumLower(c) && c != '-' {
			return false
		}
	}
	return true
}

// isDNS1123Label is validation.IsDNS1123Label without messages.
func isDNS1123Label(s string) bool {
	return len(s) <= validation.DNS1123LabelMaxLength && isDNSLabelPart(s)
}

// isDNS1123Subdomain is validation.IsDNS1123Subdomain without messages.
func isDNS1123Subdomain(s string) bool {
	if len(s) > validation.DNS1123SubdomainMaxLength {
		return false
	}
	for {
		part, rest, more := strings.Cut(s, ".")
		if !isDNSLabelPart(part) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

// isLabelName matches ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], at most 63
// characters.
func isLabelName(s string) bool {
	if s == "" || len(s) > 63 || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// isQualifiedName is validation.IsQualifiedName without messages.
func isQualifiedName(s string) bool {
	prefix, name, slash := strings.Cut(s, "/")
	if !slash {
		return isLabelName(s)
	}
	return prefix != "" && isDNS1123Subdomain(prefix) && isLabelName(name)
}

// isLabelValue is validation.IsValidLabelValue without messages.
func isLabelValue(s string) bool { return s == "" || isLabelName(s) }

func dns1123SubdomainErrors(s string) []string {
	if isDNS1123Subdomain(s) {
		return nil
	}
	return validation.IsDNS1123Subdomain(s)
}

func dns1123LabelErrors(s string) []string {
	if isDNS1123Label(s) {
		return nil
	}
	return validation.IsDNS1123Label(s)
}

func qualifiedNameErrors(s string) []string {
	if isQualifiedName(s) {
		return nil
	}
	return validation.IsQualifiedName(s)
}

func labelValueErrors(s string) []string {
	if isLabelValue(s) {
		return nil
	}
	return validation.IsValidLabelValue(s)
}
