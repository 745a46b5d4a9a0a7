#!/usr/bin/env bash
# test_datagen: the generator makes exactly the rows asked for, is idempotent,
# scopes every row to its user, and includes the hostile values it promises.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needs DATABASE_URL
U=0d0d0d0d-1111-4222-8333-444444444444
counts() {
  q "SELECT (SELECT count(*) FROM products WHERE user_id = '$U') || ' ' ||
            (SELECT count(*) FROM clients WHERE user_id = '$U') || ' ' ||
            (SELECT count(*) FROM orders WHERE user_id = '$U') || ' ' ||
            (SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.user_id = '$U') || ' ' ||
            (SELECT count(*) FROM notifications WHERE user_id = '$U') || ' ' ||
            (SELECT count(*) FROM user_settings WHERE user_id = '$U')"
}
q "DELETE FROM profiles WHERE id = '$U'" >/dev/null
"$ROOT/tools/datagen" --user "$U" --seed dgtest --orders 300 --items 4 --products 40 --clients 12 --notifications 7 2>/dev/null
check "row counts" "40 12 300 1200 7 1" "$(counts)"
"$ROOT/tools/datagen" --user "$U" --seed dgtest --orders 300 --items 4 --products 40 --clients 12 --notifications 7 2>/dev/null
check "second run adds nothing" "40 12 300 1200 7 1" "$(counts)"
check "backslashes" t "$(q "SELECT bool_or(position(chr(92) in name) > 0) FROM products WHERE user_id = '$U'")"
check "newlines" t "$(q "SELECT bool_or(name LIKE E'%\\n%') FROM products WHERE user_id = '$U'")"
check "emoji" t "$(q "SELECT bool_or(name LIKE '%🚀%') FROM products WHERE user_id = '$U'")"
check "NULLs" t "$(q "SELECT bool_or(description IS NULL) FROM products WHERE user_id = '$U'")"
check "integers above 2^53" t "$(q "SELECT bool_or(weight_grams = 9007199254740993) FROM products WHERE user_id = '$U'")"
check "numeric edge" t "$(q "SELECT bool_or(price = 9999999999.99) FROM products WHERE user_id = '$U'")"
check "huge jsonb" t "$(q "SELECT max(octet_length(attributes::text)) > 100000 FROM products WHERE user_id = '$U'")"
check "NULL array element" t "$(q "SELECT bool_or(array_position(tags, NULL) IS NOT NULL) FROM products WHERE user_id = '$U'")"
check "bytea" t "$(q "SELECT bool_or(length(thumbnail) > 0) FROM products WHERE user_id = '$U'")"
check "items belong to the user's orders only" 0 \
  "$(q "SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id JOIN products p ON p.id = i.product_id WHERE o.user_id = '$U' AND p.user_id <> o.user_id")"
check "bad --user refused" 2 "$("$ROOT/tools/datagen" --user "x'; DROP TABLE orders;--" >/dev/null 2>&1; echo $?)"
q "DELETE FROM profiles WHERE id = '$U'" >/dev/null
finish
