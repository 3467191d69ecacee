package sqlitetopg

import "fmt"

// kind is how a column's SQLite value is read and handed to PostgreSQL.
type kind int

const (
	integer kind = iota // INTEGER → BIGINT/INTEGER
	text                // TEXT → TEXT
	flag                // INTEGER 0/1 → BOOLEAN
	blob                // BLOB (NULL allowed) → BYTEA
)

type column struct {
	name string
	kind kind
}

// table is one table copied as is: the same name and columns on both
// sides (the two schemas are equal in meaning, see db/postgres's 0001).
type table struct {
	name    string
	columns []column
	// where filters the SQLite rows (its ? is bound to the copy's now in
	// Unix ms), "" for all.
	where string
	// identity is the column whose PostgreSQL identity sequence must be
	// moved past the copied values, "" for none.
	identity string
	// read maps a column to the SQLite expression read for it, when that
	// is not the column itself.
	read map[string]string
	// key names a text column whose value PostgreSQL cannot hold (see
	// fitText) drops its row rather than being fitted: two keys fitted
	// alike would collide on the primary key. "" for none.
	key string
}

// tables are copied in this order: a row's references come first
// (call_users → calls, webhook_deliveries → webhook_messages).
var tables = []table{
	{name: "calls", identity: "seq", read: map[string]string{"caller_offline_at": callerOfflineAt}, columns: []column{
		{"seq", integer}, {"id", text}, {"caller", text}, {"mode", text}, {"state", text},
		{"timeout", integer}, {"extended_data", text}, {"create_time", integer},
		{"end_time", integer}, {"end_reason", text}, {"not_received_check", flag},
		{"caller_tracked", flag}, {"caller_offline_at", integer}, {"presence_matters", flag},
	}},
	{name: "call_users", columns: []column{
		{"call_seq", integer}, {"user_id", text}, {"ord", integer}, {"state", text},
		{"inviter", text}, {"extended_data", text}, {"update_time", integer},
		{"invite_time", integer}, {"accept_time", integer}, {"timeout_at", integer},
		{"not_received_at", integer}, {"main_device", text}, {"invitation_event_id", integer},
		{"busy", flag}, {"missed_time", integer},
	}},
	{name: "events", columns: []column{
		{"id", integer}, {"user_id", text}, {"device", text}, {"call_id", text},
		{"type", text}, {"data", text}, {"time", integer},
	}},
	{name: "webhook_endpoints", columns: []column{
		{"id", text}, {"url", text}, {"secret", text}, {"event_types", text},
		{"description", text}, {"created_at", integer}, {"enabled", flag},
		{"disabled_reason", text}, {"deleted", flag}, {"deleted_at", integer},
	}},
	{name: "webhook_messages", identity: "id", columns: []column{
		{"id", integer}, {"msg_id", text}, {"type", text}, {"call_id", text},
		{"payload", blob}, {"created_at", integer},
	}},
	// Finished deliveries too: an endpoint's delivery history (GET
	// /webhooks/{id}/deliveries) stays as it was, and retention prunes
	// them as before.
	{name: "webhook_deliveries", identity: "id", columns: []column{
		{"id", integer}, {"message_id", integer}, {"endpoint_id", text}, {"status", text},
		{"attempts", integer}, {"last_status_code", integer}, {"last_error", text},
		{"next_attempt_at", integer}, {"created_at", integer}, {"delivered_at", integer},
		{"locked_until", integer},
	}},
	// Live keys only: an expired key would be pruned at once anyway.
	// A key that is not UTF-8, which servers before 13be079 stored, is
	// refused by every server since: no client can replay its row.
	{name: "idempotency_keys", where: "expires_at > ?", key: "key", columns: []column{
		{"scope", text}, {"key", text}, {"fingerprint", text}, {"status", integer},
		{"content_type", text}, {"body", blob}, {"created_at", integer}, {"expires_at", integer},
	}},
}

// callerOfflineAt is read for calls.caller_offline_at: no caller-offline
// grace stays armed. A SQLite node's start re-arms every started, tracked
// call whose caller is not connected, from its own start (none can be:
// the only node was down), but a PostgreSQL node's start arms only the
// calls with none armed (presence outlives a node there), so a grace
// copied as it was would keep counting through the move and could end the
// call the moment the first node starts, before its caller can reconnect.
// Cleared, the first node arms them as a SQLite restart would.
// presence_matters stays true for these calls (calls.PresenceMatters:
// tracked is enough). An armed untracked call, which no version writes,
// would keep its deadline: no start re-arms an untracked call.
const callerOfflineAt = "CASE WHEN state = 'started' AND caller_tracked THEN 0 ELSE caller_offline_at END"

// targetTables are the tables that must be empty in the target: the
// copied ones and event_users.
var targetTables = []string{"calls", "call_users", "events", "event_users",
	"webhook_endpoints", "webhook_messages", "webhook_deliveries", "idempotency_keys"}

// names are the columns' names, as COPY writes them.
func (t table) names() []string {
	out := make([]string, len(t.columns))
	for i, c := range t.columns {
		out[i] = c.name
	}
	return out
}

// reads are what the SELECT on SQLite reads for the columns.
func (t table) reads() []string {
	out := t.names()
	for i, c := range t.columns {
		if e, ok := t.read[c.name]; ok {
			out[i] = e
		} else if c.kind == blob {
			// The driver reads a zero-length BLOB as nil, which is NULL
			// to pgx: a stored answer's empty body became NULL (a
			// review). One byte ahead of every value keeps them apart
			// (rowSource.Values takes it off).
			out[i] = fmt.Sprintf("x'00' || %[1]s AS %[1]s", c.name)
		}
	}
	return out
}
