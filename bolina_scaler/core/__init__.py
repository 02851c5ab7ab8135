"""The pure core: a fleet snapshot, the replica count and the time in; a decision that explains itself out.

No I/O, no clock reads, no randomness (import-linter keeps it so): every rule is tested with
plain values, and the simulator runs the same code in virtual time.

* ``model``: a server and its status; ``fleet``: an immutable snapshot of the fleet and its trust;
* ``evaluation``: the one evaluation step the daemon, ``plan`` and the simulator take
  (decide, apply the pause, say what would be sent);
* ``policy``: ``decide`` (snapshot, replicas, config, memory, now → ``Decision``, memory);
* ``limits``: how far one decision may move (bounds, scale-up stabilization, step limits);
* ``fallback``: what ``policy.fallback`` does once Consul's data has stayed unusable for long;
* ``demand``: the fleet's demand from what its servers report, and whether it may be sized from;
* ``memory``: what the policy remembers between evaluations (in-flight grants, scale changes,
  the recommendation windows);
* ``pause``: the pause annotations and the decision taken while paused;
* ``role``: leader, follower or shadow, and what each may do;
* ``decision``: the decision value (desired count, direction, reason, clamps, inputs);
* ``outcome``: what the daemon did with a decision, one word everywhere;
* ``pacing``: token bucket and backoff arithmetic for the I/O loops;
* ``scaler_status``: the status ``kubectl`` shows (the annotation's content and when to write it).
"""
