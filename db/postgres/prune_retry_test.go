package postgres

import (
	"context"
	"testing"
	"time"

	"callsig/webhooks"
)

// An admin's retry of a finished delivery older than the retention puts
// it back to pending; a pruning pass that started meanwhile, and waited
// for the retry's row lock, must not delete it: the retry was answered
// 202, and the delivery would never be sent. (SQLite runs the two writes
// one after the other; PostgreSQL rechecks only the outer statement's
// conditions after such a wait.)
func TestPruneSkipsADeliveryAnAdminIsRetrying(t *testing.T) {
	ctx := context.Background()
	s, a := claimedDelivery(t)
	if err := s.FinishWebhookAttempt(ctx, webhooks.Outcome{DeliveryID: a.DeliveryID, Lease: a.Lease, EndpointID: "wh_a", At: 3000, StatusCode: 400, Error: "bad request"}); err != nil {
		t.Fatal(err)
	}

	now := (10 * 24 * time.Hour).Milliseconds()
	retried, proceed, retryDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		retryDone <- s.UpdateWebhooks(ctx, func(tx webhooks.Tx) error {
			if _, err := tx.RetryWebhookDelivery(ctx, "wh_a", a.DeliveryID, now); err != nil {
				return err
			}
			close(retried)
			<-proceed // the pruning pass runs meanwhile
			return nil
		})
	}()
	<-retried
	pruneDone := make(chan error, 1)
	go func() {
		_, err := s.PruneWebhookDeliveries(ctx, now-(7*24*time.Hour).Milliseconds(), 500)
		pruneDone <- err
	}()
	// The pass skips the locked row and finishes, or (as it did) waits
	// for the retry's lock.
	pruned, pruneErr := lockedOrDone(t, s, pruneDone)
	close(proceed)
	if !pruned {
		pruneErr = <-pruneDone
	}
	if pruneErr != nil {
		t.Fatal(pruneErr)
	}
	if err := <-retryDone; err != nil {
		t.Fatal(err)
	}
	list, err := s.WebhookDeliveries(ctx, "wh_a", webhooks.DeliveryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Status != webhooks.DeliveryPending {
		t.Fatalf("deliveries after the retry and the pruning: %+v, want the retried one pending", list)
	}
}
