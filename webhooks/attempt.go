package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// attempt sends a delivery once and decides what follows. abandoned
// reports an attempt cut short by shutdown, which has no outcome.
//
// failed reports an answer that counts against the endpoint's health for
// its breaker: no answer (timeout, refused), 5xx, 408 or 429. A 4xx is the
// receiver's verdict on the message, not a sign that it is down.
func (d *Dispatcher) attempt(ctx context.Context, a Attempt) (o Outcome, failed, abandoned bool) {
	o = Outcome{DeliveryID: a.DeliveryID, EndpointID: a.EndpointID, URL: a.URL}
	log := d.log.With("delivery", a.DeliveryID, "webhook", a.EndpointID, "webhook_id", a.MsgID, "type", a.Type, "attempt", a.Attempts+1)
	status, retryAfter, body, err := d.send(ctx, a)
	if err != nil && ctx.Err() != nil {
		return o, false, true
	}
	failed = err != nil || status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests
	now := d.clock.Now()
	o.At, o.StatusCode = now.UnixMilli(), status
	if failed && retryAfter > 0 {
		o.quietUntil = now.Add(retryAfter).UnixMilli()
	}

	var outcome string
	switch {
	case err != nil:
		// Cleaned and cut like an answer's body: the transport quotes
		// the receiver's bad status or header line into its error whole
		// (megabytes), and a certificate's names may hold a NUL.
		o.Error = clean(err.Error(), maxErrorText)
	case status >= 200 && status < 300:
		o.Delivered, outcome = true, OutcomeDelivered
	case status == http.StatusGone:
		o.Error = "endpoint answered 410 Gone"
		o.DisableReason, outcome = "endpoint answered 410 Gone", OutcomeGone
	case status >= 300 && status < 400:
		o.Error = fmt.Sprintf("unexpected status %d (redirects are not followed)", status)
	default:
		o.Error = fmt.Sprintf("unexpected status %d", status)
	}
	if !o.Delivered && status != 0 && body != "" {
		o.Error += ": " + body
	}
	if outcome == "" {
		if delay, ok := nextDelay(a.Attempts+1, d.jitter, retryAfter); ok {
			o.NextAttemptAt, outcome = now.Add(delay).UnixMilli(), OutcomeRetry
			// Never 0, which means "no attempt scheduled".
			o.NextAttemptAt = max(o.NextAttemptAt, 1)
		} else {
			outcome = OutcomeFailed
		}
	}
	d.metrics.attempts.WithLabelValues(outcome).Inc()
	switch outcome {
	case OutcomeDelivered:
		log.Debug("webhook delivered", "status", status)
	case OutcomeRetry:
		log.Info("webhook attempt failed; will retry", "status", status, "err", o.Error, "next_attempt_at", o.NextAttemptAt)
	case OutcomeFailed:
		log.Warn("webhook delivery failed; no attempt left", "status", status, "err", o.Error)
	case OutcomeGone:
		// The host only: a receiver's URL may carry a secret in its path
		// or query, and the log line names the endpoint already.
		log.Warn("webhook endpoint answered 410 Gone; disabled", "host", urlHost(a.URL))
	}
	return o, failed, false
}

// send POSTs the signed payload and returns the status, Retry-After and
// the start of the body of the answer, or the error that prevented one. At
// most MaxResponseBody of the answer is read.
func (d *Dispatcher) send(ctx context.Context, a Attempt) (status int, retryAfter time.Duration, body string, err error) {
	signer, err := NewSigner(a.Secret)
	if err != nil {
		return 0, 0, "", fmt.Errorf("endpoint secret: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL, bytes.NewReader(a.Payload))
	if err != nil {
		return 0, 0, "", fmt.Errorf("build request: %w", err)
	}
	for k, v := range signer.Headers(a.MsgID, d.clock.Now(), a.Payload) {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.userAgent)

	start := time.Now() // real time: latency is a wall-clock matter
	res, err := d.client.Do(req)
	if err != nil {
		d.metrics.latency.Observe(time.Since(start).Seconds())
		return 0, 0, "", describe(err)
	}
	defer res.Body.Close()
	if res.StatusCode < 200 {
		// 101 Switching Protocols: the transport hands the connection
		// over as the body, past the client's timeout and ctx, and a
		// read waited as long as the receiver held it (a worker and a
		// share slot for good, and a shutdown that never ended). No
		// webhook answer is an upgrade; closing the body closes it.
		d.metrics.latency.Observe(time.Since(start).Seconds())
		return res.StatusCode, 0, "", nil
	}
	raw, rerr := io.ReadAll(io.LimitReader(res.Body, MaxResponseBody))
	d.metrics.latency.Observe(time.Since(start).Seconds())
	if rerr != nil && ctx.Err() != nil {
		return 0, 0, "", rerr
	}
	// A body cut short otherwise changes nothing: the status is the answer.
	if res.StatusCode < 200 || res.StatusCode >= 300 {
		retryAfter = parseRetryAfter(res.Header.Get("Retry-After"), d.clock.Now())
	}
	return res.StatusCode, retryAfter, snippet(raw), nil
}

// describe shortens transport errors for the delivery log: the URL is
// known from the endpoint, and a timeout should say so plainly.
func describe(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("timed out: %w", ue.Err)
		}
		return ue.Err
	}
	return err
}

// snippet is the first line-ish of a body, safe to store.
func snippet(body []byte) string { return clean(string(body), maxBodyText) }

// The most of a receiver's answer kept in a delivery's last error: of its
// body, and of a transport error (which may quote what it received).
const (
	maxBodyText  = 200
	maxErrorText = 300
)

// clean returns s safe to store and log: valid UTF-8, control characters
// (a NUL above all, which PostgreSQL's text cannot hold: the outcome
// could not be recorded) turned into spaces, whitespace folded, cut at
// max bytes on a character boundary.
func clean(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	s = strings.TrimSpace(s)
	if len(s) > max {
		s = s[:max]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return strings.Join(strings.Fields(s), " ")
}

// urlHost is the host of a webhook URL, for a log line.
func urlHost(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Host
	}
	return ""
}
