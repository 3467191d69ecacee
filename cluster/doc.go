// Package cluster holds what several callsig nodes sharing one PostgreSQL
// database need beyond the store. Presence (presence.go): a user is online
// while any live node holds a stream of theirs; each node keeps a lease and
// one row per user it holds, and the nodes sweep a dead node's rows after
// its lease, so its callers' calls follow the caller-offline rule. It never
// decides a call's fate itself: it only reports presence to calls.Service.
package cluster
