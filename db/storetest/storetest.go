// Package storetest is the contract suite of db.Store: one set of tests,
// through the public interfaces only, that every storage backend runs from
// its own tests (db/sqlite's and db/postgres's store_contract_test.go). A
// behaviour one backend has and another lacks is a failing test here, not
// a comment. Tests of one backend's internals (query plans,
// pragmas, its writer's batching, file modes) stay in that backend.
package storetest

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"unsafe"

	"callsig/calls"
	"callsig/db"
)

// Open returns a new, empty store for one test. The backend closes it when
// the test ends (t.Cleanup); a test may close it earlier, so Close must be
// harmless the second time.
type Open func(t *testing.T) db.Store

// Run runs every contract test against stores from open, each test on its
// own store.
func Run(t *testing.T, open Open) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

type contract struct {
	name string
	fn   func(t *testing.T, s db.Store)
}

// tests lists the contract, grouped by port.
var tests = []contract{
	// calls.Store and calls.Tx
	{"SaveCallRoundTrip", testSaveCallRoundTrip},
	{"SaveWritesOnlyDirtyUsers", testSaveWritesOnlyDirtyUsers},
	{"FailedUpdateLeavesNothing", testFailedUpdateLeavesNothing},
	{"CallsLoadsSeveralAsCallDoes", testCallsLoadsSeveralAsCallDoes},
	{"ListCallsPaging", testListCallsPaging},
	{"CallerOfflineCallsMatchThePredicate", testCallerOfflineCallsMatchThePredicate},
	{"CallerPresenceInPages", testCallerPresenceInPages},
	{"ServiceRunArmsTrackedCallersAndStops", testServiceRunArmsTrackedCallersAndStops},
	{"DeadlinesAcrossKinds", testDeadlinesAcrossKinds},
	{"LateDeliveryOfAnEarlierInvitation", testLateDeliveryOfAnEarlierInvitation},
	// calls.DeadlineClaimer and the scheduler over it
	{"UpdateDueHandsDueDeadlines", testUpdateDueHandsDueDeadlines},
	{"UpdateDueTieOrderMatchesDueDeadlines", testUpdateDueTieOrderMatchesDueDeadlines},
	{"UpdateDueLimitKeepsTheOrder", testUpdateDueLimitKeepsTheOrder},
	{"UpdateDueRollsBackOnError", testUpdateDueRollsBackOnError},
	{"UpdateDueFiresEachDeadlineOnce", testUpdateDueFiresEachDeadlineOnce},
	{"SchedulerFiresEachDeadlineOnce", testSchedulerFiresEachDeadlineOnce},
	{"SchedulerArmsDeadlineCreatedDuringRound", testSchedulerArmsDeadlineCreatedDuringRound},
	{"SchedulerFiresPastAPoisonedDeadline", testSchedulerFiresPastAPoisonedDeadline},
	{"CallerBackBeforeItsReportKeepsItsCall", testCallerBackBeforeItsReportKeepsItsCall},
	{"CallCounts", testCallCounts},
	{"BusyUsers", testBusyUsers},
	{"StartedCalls", testStartedCalls},
	{"ClosedStoreIsUnavailable", testClosedStoreIsUnavailable},
	// the event log (sse.Log)
	{"EventIDsIncreasePerUser", testEventIDsIncreasePerUser},
	{"ChangeEventsInOrderAndInvitationsChecked", testChangeEventsInOrderAndInvitationsChecked},
	{"ManyEventsInOneChange", testManyEventsInOneChange},
	{"PendingInvitations", testPendingInvitations},
	{"PendingInvitationsCapAndUnreceived", testPendingInvitationsCapAndUnreceived},
	{"PruneEventsAndBounds", testPruneEventsAndBounds},
	{"EventRecipients", testEventRecipients},
	{"NewestEventIDs", testNewestEventIDs},
	// Idempotency-Key records
	{"IdempotencyLookupAndPut", testIdempotencyLookupAndPut},
	{"PruneIdempotency", testPruneIdempotency},
	{"IdempotencyPrunerRun", testIdempotencyPrunerRun},
	{"IdempotentChangeCommitsWithItsRecord", testIdempotentChangeCommitsWithItsRecord},
	// the webhook endpoints and outbox (webhooks.Store)
	{"WebhookEndpointsAdmin", testWebhookEndpointsAdmin},
	{"IdempotentWebhookCreate", testIdempotentWebhookCreate},
	{"WebhookEndpointCount", testWebhookEndpointCount},
	{"HooksFanOutToSubscribedEnabledEndpoints", testHooksFanOutToSubscribedEnabledEndpoints},
	{"ChangeQueuesItsSubscribedHooks", testChangeQueuesItsSubscribedHooks},
	{"ClaimWebhookDeliveriesPerEndpoint", testClaimWebhookDeliveriesPerEndpoint},
	{"ClaimFailsDeadEndpointsDeliveries", testClaimFailsDeadEndpointsDeliveries},
	{"ClaimKeepsTheReserveForFirstAttempts", testClaimKeepsTheReserveForFirstAttempts},
	{"FinishReleaseAndRetryDeliveries", testFinishReleaseAndRetryDeliveries},
	{"FinishSeveralAttemptsAtOnce", testFinishSeveralAttemptsAtOnce},
	{"FinishBatchWithGone", testFinishBatchWithGone},
	{"RenewalAndOutcomesDoNotDeadlock", testRenewalAndOutcomesDoNotDeadlock},
	{"LateAttemptCannotEndAnotherAttemptsLease", testLateAttemptCannotEndAnotherAttemptsLease},
	{"ClaimRenewsOnlyTheLeaseHeld", testClaimRenewsOnlyTheLeaseHeld},
	{"ClaimRenewsRunOutLeaseWhenFull", testClaimRenewsRunOutLeaseWhenFull},
	{"GoneFromAnOldURLKeepsTheEndpoint", testGoneFromAnOldURLKeepsTheEndpoint},
	{"PruneCalls", testPruneCalls},
	{"PresenceFollowsUserChanges", testPresenceFollowsUserChanges},
	{"PruneWebhookDeliveries", testPruneWebhookDeliveries},
	{"PurgeDeletedWebhookEndpoints", testPurgeDeletedWebhookEndpoints},
	{"ExpireWebhookDeliveries", testExpireWebhookDeliveries},
	{"DropWebhookBacklog", testDropWebhookBacklog},
}

// markDirty sets the unexported dirty flag, as a transition would. Package
// calls offers no exported way (storage must not mark rows), so the test
// reaches it through reflection.
func markDirty(u *calls.CallUser) {
	f := reflect.ValueOf(u).Elem().FieldByName("dirty")
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().SetBool(true)
}

// NewCall returns the change that creates a started call by caller inviting
// invitees at time now, with an event for each invitee.
func NewCall(id, caller string, now int64, invitees ...string) *calls.Change {
	c := &calls.Call{
		ID: id, Caller: caller, Mode: calls.ModeGeneral, State: calls.CallStarted,
		Timeout: 30, ExtendedData: "x", CreateTime: now,
		Users: []*calls.CallUser{{UserID: caller, State: calls.StateAccepted, UpdateTime: now, AcceptTime: now}},
	}
	ch := &calls.Change{Call: c, Created: true}
	for _, u := range invitees {
		c.Users = append(c.Users, &calls.CallUser{
			UserID: u, State: calls.StateInviting, Inviter: caller, UpdateTime: now, InviteTime: now,
			TimeoutAt: now + 30_000,
		})
		ch.Events = append(ch.Events, calls.Event{
			UserID: u, CallID: id, Type: calls.EventReceived, Time: now,
			Data: json.RawMessage(`{"callID":"` + id + `"}`),
		})
	}
	return ch
}

// Save runs one Save in its own Update, failing t on error.
func Save(t testing.TB, s db.Store, ch *calls.Change) {
	t.Helper()
	err := s.Update(context.Background(), func(tx calls.Tx) error { return tx.Save(context.Background(), ch) })
	if err != nil {
		t.Fatalf("save %s: %v", ch.Call.ID, err)
	}
}

// update loads callID in a write transaction, lets f change it, and saves it.
func update(t testing.TB, s db.Store, callID string, f func(c *calls.Call) *calls.Change) {
	t.Helper()
	ctx := context.Background()
	err := s.Update(ctx, func(tx calls.Tx) error {
		c, err := tx.Call(ctx, callID)
		if err != nil {
			return err
		}
		return tx.Save(ctx, f(c))
	})
	if err != nil {
		t.Fatalf("update %s: %v", callID, err)
	}
}

// events returns all of user's events in the log, oldest first.
func events(t testing.TB, s db.Store, user string) []calls.Event {
	t.Helper()
	list, err := s.EventsAfter(context.Background(), user, 0, 100_000)
	if err != nil {
		t.Fatalf("EventsAfter(%s): %v", user, err)
	}
	return list
}
