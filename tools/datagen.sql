-- datagen.sql: fill the application tables for :users tenants (set-based, fast).
-- Run through tools/datagen, which sets the variables:
--   seed, users, first_user ('' or a UUID), products, clients, orders, items, notifications
-- Ids are derived from the seed (md5 -> uuid), so running it twice adds nothing.
-- Values are hostile on purpose: quotes, backslashes, newlines, tabs, emoji,
-- NULLs, empty strings, huge jsonb, integers above 2^53, numeric edges,
-- bytea, text[] with commas and NULL elements, dates at the ends of the range; from 500
-- orders on, one order in 1000 carries notes of 1 KB to 1 MB (doubling along the orders) and
-- one a jsonb document of that size, full of JSON's escapes and control characters.
\set ON_ERROR_STOP 1
BEGIN;
SET LOCAL synchronous_commit = off;

-- a deterministic version-4-shaped UUID from any text
CREATE FUNCTION pg_temp.v4(t text) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT overlay(overlay(md5(t) PLACING '4' FROM 13) PLACING '8' FROM 17)::uuid
$$;

CREATE TEMP TABLE gen_users ON COMMIT DROP AS
SELECT n,
       coalesce(CASE WHEN n = 1 THEN nullif(:'first_user', '')::uuid END,
                pg_temp.v4(:'seed' || '-user-' || n)) AS uid
FROM generate_series(1, :users) n;

CREATE TEMP TABLE gen_text ON COMMIT DROP AS
SELECT ordinality AS i, t
FROM unnest(ARRAY[
    'Café "Especial" de Olla',
    E'Back\\slash \\N \\\\ path',
    E'Two\nlines\r\nand CRLF',
    'Emoji 🎉🚀 ñandú 中文 עברית',
    E'Tab\tseparated\tvalue',
    'O''Reilly''s "quoted" ''single''',
    '{"looks":"like json"}',
    '<script>alert(1)</script>',
    'NULL',
    '',
    E'\\x00 not bytea',
    'Robert''); DROP TABLE orders;--'
]) WITH ORDINALITY AS x(t, ordinality);

INSERT INTO profiles (id, email, full_name, role, phone, avatar)
SELECT uid,
       'user' || n || '@example.com',
       CASE WHEN n % 5 = 0 THEN NULL
            ELSE (SELECT t FROM gen_text WHERE i = 1 + n % 12) || ' ' || n END,
       'owner',
       CASE WHEN n % 3 = 0 THEN NULL ELSE '+52 55 ' || lpad((n * 7919 % 100000000)::text, 8, '0') END,
       CASE WHEN n % 2 = 0 THEN decode(md5(uid::text), 'hex') END
FROM gen_users
ON CONFLICT (id) DO NOTHING;

INSERT INTO businesses (id, owner_id, name, tax_id, address, categories, founded_on)
SELECT pg_temp.v4(uid::text || '-b'), uid,
       'Negocio ' || n || ' "La Esquina" \ ñ',
       CASE WHEN n % 4 = 0 THEN NULL ELSE 'RFC' || n END,
       jsonb_build_object('street', E'Av. Reforma 1\nPiso 2', 'zip', '06600',
                          'geo', jsonb_build_array(19.4326, -99.1332)),
       ARRAY['food', 'a,b', 'quote"d', NULL, ''],
       DATE '1999-12-31' + n
FROM gen_users
ON CONFLICT (id) DO NOTHING;

WITH huge AS (
    SELECT jsonb_object_agg('key_' || k, repeat('v', 40) || k) AS doc
    FROM generate_series(1, 5000) k
)
INSERT INTO products (id, user_id, business_id, name, description, sku, price, cost, stock,
                      weight_grams, tags, attributes, thumbnail, active, available_from)
SELECT pg_temp.v4(u.uid::text || '-p-' || j), u.uid, pg_temp.v4(u.uid::text || '-b'),
       (SELECT t FROM gen_text WHERE i = 1 + j % 12) || ' #' || j,
       CASE WHEN j % 7 = 0 THEN NULL ELSE repeat('descripción ', j % 20) END,
       'SKU-' || j,
       CASE j % 5 WHEN 0 THEN 9999999999.99 WHEN 1 THEN 0.01
                  ELSE round((j * 7.31)::numeric % 1000, 2) END,
       CASE WHEN j % 4 = 0 THEN NULL ELSE round((j * 3.17)::numeric % 500, 2) END,
       (j * 37) % 1000 - 10,
       CASE j % 11 WHEN 0 THEN 9007199254740993 WHEN 1 THEN -9223372036854775808
                   WHEN 2 THEN 9223372036854775807 ELSE j * 13 END,
       CASE j % 4 WHEN 0 THEN NULL WHEN 1 THEN ARRAY['a,b', 'quote"d', NULL, '', E'back\\slash']
                  WHEN 2 THEN '{}'::text[] ELSE ARRAY['único', '🎉'] END,
       CASE WHEN j = 1 THEN huge.doc
            WHEN j % 3 = 0 THEN NULL
            ELSE jsonb_build_object('color', 'rojo', 'size', j, 'big', 12345678901234567890123,
                                    'float', 0.1, 'nested', jsonb_build_object('deep', ARRAY[1, 2, 3]),
                                    'text', E'line\nbreak "q" \\ end', 'null', NULL) END,
       CASE j % 4 WHEN 0 THEN decode(repeat(md5(j::text), 8), 'hex') WHEN 1 THEN '\x00ff00'::bytea
                  WHEN 2 THEN ''::bytea END,
       j % 9 <> 0,
       CASE j % 6 WHEN 0 THEN NULL WHEN 1 THEN DATE '0001-01-01' WHEN 2 THEN DATE '9999-12-31'
                  ELSE DATE '2024-02-29' + j END
FROM gen_users u CROSS JOIN generate_series(1, :products) j CROSS JOIN huge
ON CONFLICT (id) DO NOTHING;

INSERT INTO clients (id, user_id, name, email, phone, address, notes, birthday, vip)
SELECT pg_temp.v4(u.uid::text || '-c-' || j), u.uid,
       (SELECT t FROM gen_text WHERE i = 1 + (j + 3) % 12) || ' cliente ' || j,
       CASE WHEN j % 6 = 0 THEN NULL ELSE 'c' || j || '@example.org' END,
       CASE WHEN j % 5 = 0 THEN NULL ELSE '55' || lpad(j::text, 8, '0') END,
       CASE WHEN j % 4 = 0 THEN NULL ELSE jsonb_build_object('city', 'CDMX', 'n', j) END,
       CASE WHEN j % 3 = 0 THEN NULL ELSE E'Nota con \\ y "comillas"\ny salto' END,
       CASE WHEN j % 7 = 0 THEN NULL ELSE DATE '1970-01-01' + j * 37 END,
       j % 10 = 0
FROM gen_users u CROSS JOIN generate_series(1, :clients) j
ON CONFLICT (id) DO NOTHING;

INSERT INTO orders (id, user_id, client_id, number, status, total, notes, order_date,
                    delivered_at, metadata)
SELECT pg_temp.v4(u.uid::text || '-o-' || k), u.uid,
       CASE WHEN :clients = 0 OR k % 13 = 0 THEN NULL
            ELSE pg_temp.v4(u.uid::text || '-c-' || (1 + k % greatest(:clients, 1))) END,
       k,
       (ARRAY['pending', 'confirmed', 'shipped', 'delivered', 'cancelled'])[1 + k % 5],
       round((k * 13.37)::numeric % 99999, 2),
       CASE WHEN k % 1000 = 500 THEN repeat(E'A\u00f1il "q" \\ \t\U0001F389\n', (1024 << (k / 1000 % 11)) / 16)
            WHEN k % 4 = 0 THEN NULL ELSE (SELECT t FROM gen_text WHERE i = 1 + k % 12) END,
       DATE '2025-01-01' + (k % 700),
       CASE WHEN k % 5 = 3 THEN TIMESTAMPTZ '2025-03-10 02:30:00.123456-06' + k * INTERVAL '1 minute' END,
       CASE WHEN k % 1000 = 700 THEN jsonb_build_object('k', k, 'blob',
                 repeat(E'\u4e2d\"\\/\b\f\r\u0001 ', (1024 << (k / 1000 % 11)) / 16))
            WHEN k % 8 = 0 THEN NULL
            ELSE jsonb_build_object('channel', 'web', 'k', k, 'tags', jsonb_build_array('a', NULL, 1.5)) END
FROM gen_users u CROSS JOIN generate_series(1, :orders) k
ON CONFLICT (id) DO NOTHING;

INSERT INTO order_items (id, order_id, product_id, quantity, unit_price, discount, notes)
SELECT pg_temp.v4(u.uid::text || '-i-' || k || '-' || m),
       pg_temp.v4(u.uid::text || '-o-' || k),
       CASE WHEN :products = 0 OR (k + m) % 17 = 0 THEN NULL
            ELSE pg_temp.v4(u.uid::text || '-p-' || (1 + (k + m) % greatest(:products, 1))) END,
       1 + (k + m) % 9,
       round(((k + m) * 3.33)::numeric % 5000, 2),
       CASE WHEN m = 2 THEN 0.50 END,
       CASE WHEN (k + m) % 50 = 0 THEN E'sin cebolla\tpor favor "gracias"' END
FROM gen_users u CROSS JOIN generate_series(1, :orders) k CROSS JOIN generate_series(1, :items) m
ON CONFLICT (id) DO NOTHING;

INSERT INTO notifications (id, user_id, type, title, body, data, read)
SELECT pg_temp.v4(u.uid::text || '-n-' || j), u.uid,
       (ARRAY['order', 'backup', 'system'])[1 + j % 3],
       'Aviso ' || j || ' ✅',
       CASE WHEN j % 2 = 0 THEN NULL ELSE E'Cuerpo\ncon salto' END,
       jsonb_build_object('j', j),
       j % 2 = 0
FROM gen_users u CROSS JOIN generate_series(1, :notifications) j
ON CONFLICT (id) DO NOTHING;

INSERT INTO user_settings (user_id, locale, timezone, currency, backup_schedule, preferences)
SELECT uid, (ARRAY['es', 'en', 'pt'])[1 + n % 3],
       (ARRAY['America/Mexico_City', 'Europe/Madrid', 'Asia/Kolkata'])[1 + n % 3],
       'MXN', (ARRAY['daily', 'weekly', 'off'])[1 + n % 3],
       jsonb_build_object('theme', 'dark', 'emoji', '🌙')
FROM gen_users
ON CONFLICT (user_id) DO NOTHING;

COMMIT;
