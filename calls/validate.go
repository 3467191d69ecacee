package calls

import (
	"fmt"
	"strings"
)

// ValidUserID reports whether id is 1–128 characters of [A-Za-z0-9_.@:-].
func ValidUserID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_', c == '.', c == '@', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// checkInvitees validates an invitee list: min..MaxInvitees valid, distinct
// user IDs, none of them the actor.
func checkInvitees(field string, ids []string, min int, self string) error {
	if len(ids) < min {
		return invalid(field, "at least %d invitee(s) required", min)
	}
	if len(ids) > MaxInvitees {
		return invalid(field, "at most %d invitees allowed, got %d", MaxInvitees, len(ids))
	}
	seen := make(map[string]bool, len(ids))
	for i, id := range ids {
		f := fmt.Sprintf("%s/%d", field, i)
		switch {
		case !ValidUserID(id):
			return invalid(f, "%q is not a valid user ID (1-128 characters of A-Za-z0-9_.@:-)", id)
		case seen[id]:
			return invalid(f, "%q is listed twice", id)
		case id == self && min > 0:
			return invalid(f, "cannot invite yourself")
		}
		seen[id] = true
	}
	return nil
}

// checkExtendedData bounds an extendedData and refuses U+0000: it is
// stored as text, which PostgreSQL cannot hold a NUL in (a call saved
// with one failed there, and its SQLite file could not be moved to
// PostgreSQL), and a NUL in an app's free text is a bug of the app.
func checkExtendedData(field, s string) error {
	if len(s) > MaxExtendedData {
		return invalid(field, "at most %d bytes allowed, got %d", MaxExtendedData, len(s))
	}
	if strings.IndexByte(s, 0) >= 0 {
		return invalid(field, "must not contain U+0000 (NUL)")
	}
	return nil
}

func checkPushConfig(p *PushConfig) error {
	if p == nil {
		return nil
	}
	for _, f := range []struct {
		name string
		val  string
		max  int
	}{{"pushConfig/title", p.Title, 256}, {"pushConfig/content", p.Content, 1024}, {"pushConfig/payload", p.Payload, 2048}, {"pushConfig/resourcesID", p.ResourcesID, 256}} {
		if len(f.val) > f.max {
			return invalid(f.name, "at most %d bytes allowed, got %d", f.max, len(f.val))
		}
	}
	return nil
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
