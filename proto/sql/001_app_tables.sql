-- 001_app_tables: the application tables whose rows the worker backs up.
--
-- Same tables as the original design. User ids are Supabase auth UUIDs.
-- Per-user scope: profiles.id, businesses.owner_id, user_id in products,
-- clients, orders, notifications and user_settings; order_items belong to a
-- user through orders. Idempotent: safe to apply any number of times.

CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE IF NOT EXISTS profiles (
    id          uuid PRIMARY KEY,
    email       text NOT NULL,
    full_name   text,
    role        text NOT NULL DEFAULT 'owner' CHECK (role IN ('owner', 'admin', 'staff')),
    phone       text,
    avatar      bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS businesses (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    name        text NOT NULL,
    tax_id      text,
    address     jsonb,
    categories  text[],
    founded_on  date,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS businesses_owner_id_idx ON businesses (owner_id);

CREATE TABLE IF NOT EXISTS products (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    business_id    uuid REFERENCES businesses (id) ON DELETE SET NULL,
    name           text NOT NULL,
    description    text,
    sku            text,
    price          numeric(12,2) NOT NULL DEFAULT 0,
    cost           numeric(12,2),
    stock          integer NOT NULL DEFAULT 0,
    weight_grams   bigint,
    tags           text[],
    attributes     jsonb,
    thumbnail      bytea,
    active         boolean NOT NULL DEFAULT true,
    available_from date,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS products_user_id_idx ON products (user_id);

CREATE TABLE IF NOT EXISTS clients (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    name        text NOT NULL,
    email       text,
    phone       text,
    address     jsonb,
    notes       text,
    birthday    date,
    vip         boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS clients_user_id_idx ON clients (user_id);

CREATE TABLE IF NOT EXISTS orders (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    client_id     uuid REFERENCES clients (id) ON DELETE SET NULL,
    number        bigint NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'confirmed', 'shipped', 'delivered', 'cancelled')),
    total         numeric(12,2) NOT NULL DEFAULT 0,
    notes         text,
    order_date    date NOT NULL DEFAULT current_date,
    delivered_at  timestamptz,
    metadata      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_user_id_idx ON orders (user_id);

CREATE TABLE IF NOT EXISTS order_items (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id    uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id  uuid REFERENCES products (id) ON DELETE SET NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  numeric(12,2) NOT NULL,
    discount    numeric(12,2),
    notes       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS order_items_order_id_idx ON order_items (order_id);

CREATE TABLE IF NOT EXISTS notifications (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    type        text NOT NULL,
    title       text NOT NULL,
    body        text,
    data        jsonb,
    read        boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notifications_user_id_idx ON notifications (user_id);

CREATE TABLE IF NOT EXISTS user_settings (
    user_id          uuid PRIMARY KEY REFERENCES profiles (id) ON DELETE CASCADE,
    locale           text NOT NULL DEFAULT 'es',
    timezone         text NOT NULL DEFAULT 'America/Mexico_City',
    currency         text NOT NULL DEFAULT 'MXN',
    backup_schedule  text NOT NULL DEFAULT 'daily'
                     CHECK (backup_schedule IN ('daily', 'weekly', 'off')),
    preferences      jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- updated_at kept current on every table
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['profiles', 'businesses', 'products', 'clients', 'orders',
                             'order_items', 'notifications', 'user_settings'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_set_updated_at', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION set_updated_at()',
                       t || '_set_updated_at', t);
    END LOOP;
END;
$$;
