package webhooks

import (
	"context"
	"errors"
)

// The dispatcher's side of the leases. Each attempt holds its delivery's
// lease, named by the Unix ms it ends (Attempt.Lease), and records its
// outcome or release with it; the store ignores the result of an attempt
// whose lease was taken over (ErrLeaseLost). A claim renews the lease of
// an attempt in flight that outlived it (a clock jump), and the attempt
// then records with the renewed lease.

// claimDeliveries runs one claim and gives the attempts in flight whose
// leases it renewed their new lease (d.inflight). d.claiming is open while
// it runs, for record.
func (d *Dispatcher) claimDeliveries(ctx context.Context, c Claim) (Claimed, error) {
	done := make(chan struct{})
	d.mu.Lock()
	d.claiming = done
	d.mu.Unlock()
	defer close(done)
	claimed, err := d.store.ClaimWebhookDeliveries(ctx, c)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range claimed.Renewed {
		if _, ok := d.inflight[id]; ok {
			d.inflight[id] = c.LeaseUntil
		}
	}
	d.claiming = nil
	return claimed, err
}

// record runs write, an attempt's finish or release, with the lease the
// attempt holds. When the store refuses it for a lost lease, a claim may
// have renewed the lease after write read it and before the dispatcher
// learnt of it: record waits for a claim running, and tries once more if
// the lease was renewed. Otherwise the attempt's result is ignored
// (ErrLeaseLost): another attempt took the delivery over.
func (d *Dispatcher) record(deliveryID int64, write func(lease int64) error) error {
	lease := d.leaseOf(deliveryID)
	err := write(lease)
	if !errors.Is(err, ErrLeaseLost) {
		return err
	}
	d.mu.Lock()
	claiming := d.claiming
	d.mu.Unlock()
	if claiming != nil {
		<-claiming
	}
	if renewed := d.leaseOf(deliveryID); renewed != lease {
		return write(renewed)
	}
	return err
}

// leaseOf returns the lease of an attempt in flight.
func (d *Dispatcher) leaseOf(deliveryID int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inflight[deliveryID]
}

// leaseLost logs and counts an attempt's result the store ignored: the
// attempt outlived its lease (a slow node, or its clock behind another
// node's) and another attempt took the delivery over, whose result is the
// one that counts. The answer still fed the endpoint's breaker: the
// endpoint gave it.
func (d *Dispatcher) leaseLost(a Attempt, what string) {
	d.metrics.fenced.Inc()
	d.log.Info("webhook attempt's "+what+" ignored: it no longer holds its delivery's lease",
		"delivery", a.DeliveryID, "webhook", a.EndpointID, "webhook_id", a.MsgID)
}
