//go:build race

package gun

const raceEnabled = true
