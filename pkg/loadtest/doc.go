// Package loadtest is Capstan's load generator: a pandora-class engine that
// fires requests on a schedule and measures them honestly.
//
// The engine is split into small packages with one contract each:
//
//   - schedule: when to shoot. Plans of tokens with intended times in closed
//     form (const, line, step, once, unlimited, composite), split into the
//     i-th of n shares for replicas.
//   - ammo: what to shoot. Providers hand out requests from inline lists or
//     files (JSON lines, pandora's uri format), with passes, limits and reuse.
//   - gun: how to shoot. HTTP/1.1 (a lean keep-alive client), HTTP/2 and h2c,
//     gRPC unary, multi-step scenarios and guns registered in Go.
//   - aggregate: what happened. Samples go into HDR histograms overall, per
//     tag and per result code, without ever blocking a shot.
//   - engine: runs pools of instances that take tokens, wait for their
//     intended time and shoot, under thresholds that may stop a run early.
//   - config: the YAML/JSON spec of a run, strictly decoded.
//   - files: where the files a spec names are read from: relative to the
//     config file, or confined to a directory for LoadTest resources.
//   - report: the live progress line, summary table, JSON, phout, HTML and
//     Prometheus outputs.
//
// Every shot records its intended time, its send time and its completion, so
// a result reports latency from the intended time (corrected for
// coordinated omission) next to service time.
package loadtest
