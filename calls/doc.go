// Package calls is the call-invitation domain: the nouns (Call, CallUser,
// Event), the state machine as pure functions, and the Service that runs one
// use-case per method inside a single storage transaction.
//
// Every state change and every event it causes are produced together by the
// transition functions and persisted together by the Store, so delivery
// (SSE streams, webhooks, timers) can only ever see committed facts.
//
// This package must never import net/http or a SQL driver: storage, transport
// and delivery are adapters that depend on it, not the other way round.
package calls
