// Package web embeds what callsig serves to browsers: the JavaScript
// client (sdk/callsig.js, one ES module with no build step, served at
// /sdk/callsig.js by SDKHandler) and the demo page, its first user (plain
// HTML, CSS and JavaScript under /demo/, served by Handler with strict
// caching and security headers), which signs in with POST /dev/token and
// does everything else through the client.
//
// Both are clients of the public HTTP contract and nothing else: this
// package must never import the server's own packages, and the page must
// never load anything from outside the server it came from.
package web
