-- The OLTP mix of tools/bench/tracking.sh and rpo.sh, for pgbench (-D uid=USER): a new order
-- with three items, a status update, an item update, the order deleted (its items by cascade).
\set n random(1, 1000000000)
BEGIN;
INSERT INTO orders (user_id, number, total) VALUES (':uid', :n, 10) RETURNING id AS oid \gset
INSERT INTO order_items (order_id, quantity, unit_price) VALUES (':oid', 1, 1), (':oid', 2, 2), (':oid', 3, 3);
UPDATE orders SET status = 'confirmed' WHERE id = ':oid';
UPDATE order_items SET quantity = quantity + 1 WHERE order_id = ':oid' AND quantity = 1;
DELETE FROM orders WHERE id = ':oid';
END;
