-- 0002: cluster-wide presence (see cluster/presence.go). A user is online
-- while any live node holds a stream of theirs; a node is live while its
-- lease is unexpired. Times are Unix milliseconds of the database server's
-- clock, so the nodes' own clocks never have to agree.

-- One row per node: renewed every lease/3 by the node itself; a row whose
-- lease_until has passed belongs to a dead (or stuck) node and is swept,
-- with its presence rows, by any other node.
CREATE TABLE nodes (
    node_id     TEXT   PRIMARY KEY,
    lease_until BIGINT NOT NULL
);

-- One row per (node, user) while the node holds at least one stream of
-- the user. No foreign key to nodes: a row of a swept node is deleted in
-- the sweep's transaction, and a node writes its first lease before it
-- serves a stream.
CREATE TABLE presence (
    node_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (node_id, user_id)
);

-- "Is this user online anywhere": the user's rows, joined to their nodes.
CREATE INDEX presence_by_user ON presence (user_id);
