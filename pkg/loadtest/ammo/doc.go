// Package ammo says what a load generator shoots.
//
// An Ammo is one request description: HTTP method, URI, headers and body;
// a gRPC call and its JSON payload; variables for a scenario; a tag that
// groups its results. A Provider hands ammo to the engine's instances: from
// an inline list, or from a file in JSON lines or pandora's uri format,
// looping over it for a number of passes (0 loops forever) up to a limit.
//
// Loaded ammo is decoded once and shared: Acquire hands out pointers into
// an immutable slice without allocating, and guns MUST NOT modify it. A
// streamed file (for ammo too large to hold in memory) decodes each line
// into a pooled Ammo that Release returns for reuse.
package ammo
