"""The reference domain: a cold-chain grocery retailer, generated deterministically.

``generate(scale, seed)`` returns one Arrow table per bronze contract. The data carries signal
for the ML layers (weekday and seasonal demand, promotions, refrigeration faults whose
temperature excursions cause waste, spoiled returns and failed inspections) and deliberate dirt
for silver to clean (re-sent orders, late rows, nulls, badly coded values, sensor sentinels,
customers who move, products whose prices change).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lakehouse.config import Project
from lakehouse.contracts import Contract, load_contracts
from lakehouse.errors import ConfigurationError

START = dt.datetime(2026, 3, 2)  # a Monday


DAYS = 120


READING_MINUTES = 15


SENSOR_ERROR_C = -99.9  # what a failing probe reports


_REGIONS = [("R1", "North", "US"), ("R2", "South", "US"), ("R3", "East", "US"), ("R4", "West", "US")]


_CITIES = {
    "R1": ["Minneapolis", "Fargo", "Duluth"],
    "R2": ["Austin", "Houston", "Atlanta"],
    "R3": ["Boston", "Albany", "Newark"],
    "R4": ["Denver", "Portland", "Fresno"],
}


# category: (shelf life days, safe max °C, cost range, unit kept in)
_CATEGORIES = {
    "dairy": (10, 5.0, (0.8, 4.0), "fridge"),
    "meat": (4, 4.0, (3.0, 14.0), "fridge"),
    "fish": (3, 3.0, (4.0, 18.0), "fridge"),
    "produce": (7, 8.0, (0.4, 3.5), "fridge"),
    "frozen": (180, -15.0, (1.5, 9.0), "freezer"),
    "bakery": (3, 25.0, (0.9, 5.0), None),
    "beverages": (365, 25.0, (0.7, 3.0), None),
    "pantry": (365, 25.0, (0.6, 6.0), None),
}


_FIRST = [
    "Ava",
    "Ben",
    "Cleo",
    "Dan",
    "Eva",
    "Finn",
    "Gia",
    "Hugo",
    "Ines",
    "Jon",
    "Kai",
    "Lea",
    "Max",
    "Nia",
    "Omar",
    "Pia",
    "Quinn",
    "Rosa",
    "Sam",
    "Tia",
    "Uma",
    "Vik",
    "Wes",
    "Zoe",
]


_LAST = [
    "Smith",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Lopez",
    "Wilson",
    "Moore",
    "Taylor",
    "Lee",
    "Clark",
    "Lewis",
    "Young",
    "King",
    "Hill",
    "Green",
]


_STREETS = ["Oak", "Maple", "Pine", "Cedar", "Elm", "Birch", "Lake", "Hill", "Park", "River"]


_WEEKDAY = np.array([0.85, 0.9, 0.95, 1.0, 1.25, 1.35, 1.1])  # Mon..Sun demand


def domain_sizes(scale: float) -> tuple[int, int, int]:
    """(stores, products, customers) at a scale factor: ids run S001.., P0001.., C000001.."""
    return max(2, round(12 * scale)), max(20, round(120 * min(scale, 4))), max(50, round(3000 * scale))


@dataclass(frozen=True)
class Fault:
    device: int
    start: int  # reading index
    length: int  # readings
    peak: float  # °C above normal at the worst


def _ts(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype("datetime64[us]"), pa.timestamp("us"))


def _ids(prefix: str, numbers: np.ndarray, width: int) -> list[str]:
    return [f"{prefix}{n:0{width}d}" for n in numbers]


REFERENCE_TABLES = (
    "regions",
    "stores",
    "products",
    "customers",
    "devices",
    "sensor_readings",
    "orders",
    "order_lines",
    "returns",
    "waste",
    "quality_inspections",
    "shipments",
)


def reference_contracts(project: Project | None = None) -> dict[str, Contract]:
    """The reference retailer's contracts, by table name, from ``project`` (default: the
    environment's), which must be the reference project (this repository's root) or declare
    the same tables."""
    contracts = load_contracts(project)
    missing = [f"bronze.{t}" for t in REFERENCE_TABLES if f"bronze.{t}" not in contracts]
    if missing:
        raise ConfigurationError(
            f"the reference retailer needs {', '.join(missing)}, which the project does not declare: "
            "run it in the reference project (the repository's root, or LAKEHOUSE_PROJECT_DIR set to it)"
        )
    return {t: contracts[f"bronze.{t}"] for t in REFERENCE_TABLES}


class _Generator:
    def __init__(self, scale: float, seed: int, contracts: dict[str, Contract]) -> None:
        self.contracts = contracts
        self.rng = np.random.default_rng(seed)
        self.scale = scale
        self.start = np.datetime64(START, "us")
        self.n_stores, self.n_products, self.n_customers = domain_sizes(scale)

    def _empty_rows(self, table: str) -> dict[str, list[object]]:
        """Column lists to fill, one per column of the table's contract."""
        return {c.name: [] for c in self.contracts[table].columns}

    # -- masters ------------------------------------------------------------------------------

    def regions(self) -> pa.Table:
        return pa.table(
            {k: [r[i] for r in _REGIONS] for i, k in enumerate(["region_id", "region_name", "country"])}
        )

    def stores(self) -> pa.Table:
        rng = self.rng
        n = self.n_stores
        self.store_ids = [f"S{i:03d}" for i in range(1, n + 1)]
        self.store_region = [_REGIONS[i % len(_REGIONS)][0] for i in range(n)]
        self.store_size = rng.uniform(0.6, 1.6, n)
        cities = [_CITIES[r][i // len(_REGIONS) % 3] for i, r in enumerate(self.store_region)]
        opened = [dt.date(2015, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 3000, n)]
        return pa.table(
            {
                "store_id": self.store_ids,
                "region_id": self.store_region,
                "store_name": [f"{c} #{i + 1}" for i, c in enumerate(cities)],
                "city": cities,
                "opened_date": pa.array(opened, pa.date32()),
                "square_meters": pa.array((self.store_size * 1500).round().astype("int32")),
            }
        )

    def products(self) -> pa.Table:
        rng = self.rng
        n = self.n_products
        cats = list(_CATEGORIES)
        weights = np.array([0.16, 0.1, 0.06, 0.18, 0.12, 0.1, 0.14, 0.14])
        self.product_cat = rng.choice(cats, n, p=weights)
        self.product_ids = [f"P{i:04d}" for i in range(1, n + 1)]
        cost = np.array([rng.uniform(*_CATEGORIES[c][2]) for c in self.product_cat]).round(2)
        price = (cost * rng.uniform(1.25, 1.8, n)).round(2)
        self.popularity = rng.pareto(1.5, n) + 0.2
        self.popularity /= self.popularity.sum()
        self.perishable = np.array([_CATEGORIES[c][0] <= 14 for c in self.product_cat])
        # prices change once for ~20% of products part-way through the period
        self.price_change_day = np.where(rng.random(n) < 0.2, rng.integers(20, DAYS - 20, n), -1)
        self.price_v1 = price
        self.price_v2 = (price * rng.uniform(1.05, 1.15, n)).round(2)
        rows = self._empty_rows("products")
        first_seen = START - dt.timedelta(days=400)

        def add(i: int, p: float, when: dt.datetime) -> None:
            c = str(self.product_cat[i])
            rows["product_id"].append(self.product_ids[i])
            rows["sku"].append(f"SKU-{100000 + i * 7}")
            rows["product_name"].append(f"{c.title()} item {i + 1}")
            rows["category"].append(c)
            rows["perishable"].append(bool(self.perishable[i]))
            rows["shelf_life_days"].append(_CATEGORIES[c][0])
            rows["unit_cost"].append(f"{cost[i]:.2f}")
            rows["unit_price"].append(f"{p:.2f}")
            rows["safe_temp_max_c"].append(_CATEGORIES[c][1])
            rows["updated_at"].append(when)

        for i in range(n):
            add(i, self.price_v1[i], first_seen)
            if self.price_change_day[i] >= 0:
                add(i, self.price_v2[i], START + dt.timedelta(days=int(self.price_change_day[i]), hours=5))
        return self._as_contract("products", rows)

    def customers(self) -> pa.Table:
        rng = self.rng
        n = self.n_customers
        self.customer_ids = [f"C{i:06d}" for i in range(1, n + 1)]
        self.customer_store = rng.integers(0, self.n_stores, n)
        rows = self._empty_rows("customers")
        moves = rng.random(n) < 0.15
        for i in range(n):
            first, last = _FIRST[rng.integers(len(_FIRST))], _LAST[rng.integers(len(_LAST))]
            email = f"{first}.{last}{i}@example.com".lower()
            if rng.random() < 0.05:  # dirt: case and padding the till let through
                email = f"  {email.upper()} "
            digits = f"{rng.integers(200, 999)}{rng.integers(1000000, 9999999)}"
            phone = [
                f"+1-{digits[:3]}-{digits[3:6]}-{digits[6:]}",
                f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
                digits,
            ][int(rng.integers(3))]
            birth = dt.date(1950, 1, 1) + dt.timedelta(days=int(rng.integers(0, 20000)))
            store = int(self.customer_store[i])
            city = self._store_city(store)
            versions = [(START - dt.timedelta(days=int(rng.integers(30, 900))), city)]
            if moves[i]:
                versions.append((START + dt.timedelta(days=int(rng.integers(1, DAYS - 1)), hours=9), city))
            for when, c in versions:
                rows["customer_id"].append(self.customer_ids[i])
                rows["full_name"].append(f"{first} {last}")
                rows["email"].append(email)
                rows["phone"].append(phone if rng.random() > 0.03 else None)
                rows["birth_date"].append(birth)
                rows["street"].append(f"{rng.integers(1, 999)} {_STREETS[rng.integers(len(_STREETS))]} St")
                rows["city"].append(c)
                rows["postal_code"].append(f"{rng.integers(10000, 99999)}")
                rows["home_store_id"].append(self.store_ids[store])
                rows["updated_at"].append(when)
        return self._as_contract("customers", rows)

    def _store_city(self, store: int) -> str:
        region = self.store_region[store]
        return _CITIES[region][store // len(_REGIONS) % 3]

    def devices(self) -> pa.Table:
        rng = self.rng
        ids: list[str] = []
        stores: list[str] = []
        types: list[str] = []
        safe_min: list[float] = []
        safe_max: list[float] = []
        for s, store in enumerate(self.store_ids):
            for kind in ["fridge", "freezer"] + (["fridge"] if self.store_size[s] > 1.3 else []):
                ids.append(f"D-{store}-{stores.count(store) + 1}")
                stores.append(store)
                types.append(kind)
                safe_min.append(0.0 if kind == "fridge" else -25.0)
                safe_max.append(5.0 if kind == "fridge" else -15.0)
        self.device_ids, self.device_store, self.device_type = ids, stores, types
        self.device_safe_max = np.array(safe_max)
        installed = [dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 2000, len(ids))]
        return pa.table(
            {
                "device_id": ids,
                "store_id": stores,
                "device_type": types,
                "model": [
                    ("ColdLine " if t == "fridge" else "FrostMax ") + str(rng.integers(200, 400))
                    for t in types
                ],
                "installed_date": pa.array(installed, pa.date32()),
                "safe_temp_min_c": safe_min,
                "safe_temp_max_c": safe_max,
            }
        )

    # -- refrigeration ------------------------------------------------------------------------

    def sensor_readings(self) -> pa.Table:
        rng = self.rng
        per_day = 24 * 60 // READING_MINUTES
        n_steps = DAYS * per_day
        minutes = np.arange(n_steps) * READING_MINUTES
        hour = (minutes // 60) % 24
        doy = (START.timetuple().tm_yday + minutes / 1440.0) % 365
        season = np.sin(2 * np.pi * (doy - 105) / 365)  # warmer towards summer
        open_hours = (hour >= 8) & (hour < 21)
        self.faults: list[Fault] = []
        cols: dict[str, list[np.ndarray]] = {"device": [], "ts": [], "temp": [], "door": []}
        for d, kind in enumerate(self.device_type):
            base = 3.0 if kind == "fridge" else -19.0
            door = open_hours & (rng.random(n_steps) < (0.10 if kind == "fridge" else 0.04))
            temp = base + 0.4 * season + rng.normal(0, 0.35, n_steps) + np.where(door, 1.3, 0.0)
            # faults: the compressor fails, temperature climbs, a technician fixes it hours later
            for _ in range(rng.poisson(1.6 * (1.5 if kind == "fridge" else 1.0))):
                start = int(rng.integers(0, n_steps - per_day))
                length = int(rng.integers(8, 44))  # 2 to 11 hours
                peak = float(rng.uniform(5, 11))
                ramp = np.minimum(1.0, np.arange(length) / max(1, length // 3))
                temp[start : start + length] += peak * ramp
                self.faults.append(Fault(d, start, length, peak))
            cols["device"].append(np.full(n_steps, d))
            cols["ts"].append(self.start + minutes.astype("timedelta64[m]"))
            cols["temp"].append(temp.round(2))
            cols["door"].append(door)
        device = np.concatenate(cols["device"])
        ts = np.concatenate(cols["ts"])
        temp = np.concatenate(cols["temp"])
        door = np.concatenate(cols["door"])
        # dirt: failing probes report a sentinel, some readings are lost, some are sent twice
        temp[rng.random(temp.size) < 0.003] = SENSOR_ERROR_C
        temp_arr = pa.array(temp, mask=rng.random(temp.size) < 0.002)
        dup = np.flatnonzero(rng.random(temp.size) < 0.005)
        order = np.concatenate([np.arange(temp.size), dup])
        device_ids = np.array(self.device_ids)[device]
        stores = np.array(self.device_store)[device]
        return pa.table(
            {
                "device_id": pa.array(device_ids[order]),
                "store_id": pa.array(stores[order]),
                "reading_ts": _ts(ts[order]),
                "temperature_c": temp_arr.take(pa.array(order)),
                "door_open": pa.array(door[order]),
            }
        )

    def _fault_days(self) -> dict[tuple[str, str], set[int]]:
        """(store, unit kind) -> days on which that unit had an excursion beyond its safe limit."""
        per_day = 24 * 60 // READING_MINUTES
        out: dict[tuple[str, str], set[int]] = {}
        for f in self.faults:
            if f.peak < 3:
                continue
            key = (self.device_store[f.device], self.device_type[f.device])
            out.setdefault(key, set()).update({f.start // per_day, (f.start + f.length) // per_day})
        return out

    # -- sales --------------------------------------------------------------------------------

    def orders_and_lines(self) -> tuple[pa.Table, pa.Table]:
        rng = self.rng
        promo_prod = rng.choice(self.n_products, size=max(3, self.n_products // 6), replace=False)
        promo_start = rng.integers(0, DAYS - 7, promo_prod.size)
        promo_disc = rng.choice([10.0, 15.0, 20.0, 25.0], promo_prod.size)
        order_rows = self._empty_rows("orders")
        line_rows = self._empty_rows("order_lines")
        self.sold: list[
            tuple[int, int, int, int, int]
        ] = []  # (day, store, product, qty, order_no) for returns
        order_no = 0
        for day in range(DAYS):
            date = START + dt.timedelta(days=day)
            doy = date.timetuple().tm_yday
            season = 1 + 0.15 * np.sin(2 * np.pi * (doy - 105) / 365)
            active = (promo_start <= day) & (day < promo_start + 7)
            discount = np.zeros(self.n_products)
            discount[promo_prod[active]] = promo_disc[active]
            weights = self.popularity * np.where(discount > 0, 2.8, 1.0)
            weights /= weights.sum()
            prices = np.where(
                (self.price_change_day >= 0) & (day >= self.price_change_day), self.price_v2, self.price_v1
            )
            for s in range(self.n_stores):
                n_orders = rng.poisson(22 * self.store_size[s] * _WEEKDAY[date.weekday()] * season)
                if n_orders == 0:
                    continue
                n_lines = np.minimum(1 + rng.poisson(1.8, n_orders), 8)
                products = rng.choice(self.n_products, size=int(n_lines.sum()), p=weights)
                secs = (rng.beta(2.2, 2.0, n_orders) * 13 + 8) * 3600
                local_customers = np.flatnonzero(self.customer_store == s)
                pos = 0
                for k in range(n_orders):
                    order_no += 1
                    oid = f"O{order_no:09d}"
                    ts = date + dt.timedelta(seconds=float(secs[k]))
                    lines = products[pos : pos + n_lines[k]]
                    pos += n_lines[k]
                    lines = np.unique(lines)
                    promo = [self.product_ids[p] for p in lines if discount[p] > 0]
                    ingest = ts + dt.timedelta(minutes=float(rng.exponential(3)))
                    if rng.random() < 0.01:  # late: the till was offline for days
                        ingest += dt.timedelta(days=float(rng.uniform(1, 5)))
                    if rng.random() < 0.88:
                        pool = local_customers if local_customers.size and rng.random() < 0.75 else None
                        cust = self.customer_ids[
                            int(rng.choice(pool) if pool is not None else rng.integers(self.n_customers))
                        ]
                    else:
                        cust = None  # guest checkout
                    channel = "store" if rng.random() < 0.8 else "web"
                    if rng.random() < 0.05:
                        channel = [" " + channel.upper(), channel.title(), channel + " "][
                            int(rng.integers(3))
                        ]
                    store = self.store_ids[s]
                    store_code = store
                    if rng.random() < 0.004:
                        store_code = "S999"  # a till with a misconfigured store code
                    elif rng.random() < 0.01:
                        store_code = f" {store.lower()}"
                    copies = 2 if rng.random() < 0.015 else 1  # re-sent by the till
                    for c in range(copies):
                        sent = ingest + dt.timedelta(hours=6 * c)
                        order_rows["order_id"].append(oid)
                        order_rows["customer_id"].append(cust)
                        order_rows["store_id"].append(store_code)
                        order_rows["order_ts"].append(ts)
                        order_rows["channel"].append(channel)
                        order_rows["promo_code"].append(f"PROMO-{promo[0]}" if promo else None)
                        order_rows["ingested_at"].append(sent)
                        for n, p in enumerate(lines, start=1):
                            qty = int(1 + rng.poisson(0.7 if self.perishable[p] else 0.4))
                            line_rows["order_id"].append(oid)
                            line_rows["line_number"].append(n)
                            line_rows["store_id"].append(store)
                            line_rows["product_id"].append(self.product_ids[p])
                            line_rows["quantity"].append(qty if rng.random() > 0.003 else None)
                            line_rows["unit_price"].append(f"{prices[p]:.2f}")
                            line_rows["discount_pct"].append(f"{discount[p]:.2f}")
                            line_rows["ingested_at"].append(sent)
                            if c == 0:
                                self.sold.append((day, s, int(p), qty, order_no))
        return self._as_contract("orders", order_rows), self._as_contract("order_lines", line_rows)

    def returns(self) -> pa.Table:
        rng = self.rng
        fault_days = self._fault_days()
        rows = self._empty_rows("returns")
        line_no: dict[int, int] = {}
        for day, s, p, qty, order_no in self.sold:
            line_no[order_no] = line_no.get(order_no, 0) + 1
            unit = _CATEGORIES[str(self.product_cat[p])][3]
            spoiled = unit is not None and any(
                d in fault_days.get((self.store_ids[s], unit), ()) for d in (day, day - 1)
            )
            if rng.random() >= (0.25 if spoiled else 0.012):
                continue
            rows["return_id"].append(f"RT{len(rows['return_id']) + 1:08d}")
            rows["order_id"].append(f"O{order_no:09d}")
            rows["line_number"].append(line_no[order_no])
            rows["store_id"].append(self.store_ids[s])
            rows["product_id"].append(self.product_ids[p])
            rows["return_ts"].append(START + dt.timedelta(days=day + float(rng.uniform(0.5, 6))))
            rows["quantity"].append(int(rng.integers(1, qty + 1)))
            rows["reason_code"].append(
                "SPOILED" if spoiled else str(rng.choice(["DAMAGED", "CHANGED_MIND", "WRONG_ITEM"]))
            )
        return self._as_contract("returns", rows)

    # -- cold chain outcomes ------------------------------------------------------------------

    def waste(self) -> pa.Table:
        rng = self.rng
        fault_days = self._fault_days()
        unit_of = {(self.device_store[i], k): self.device_ids[i] for i, k in enumerate(self.device_type)}
        rows = self._empty_rows("waste")

        def add(store: str, p: int, day: int, qty: int, reason: str) -> None:
            unit = _CATEGORIES[str(self.product_cat[p])][3]
            rows["waste_id"].append(f"W{len(rows['waste_id']) + 1:08d}")
            rows["store_id"].append(store)
            rows["product_id"].append(self.product_ids[p])
            rows["waste_date"].append((START + dt.timedelta(days=day)).date())
            rows["quantity"].append(qty)
            if rng.random() < 0.01:
                reason = "XX"  # an unknown code from an old handheld
            elif rng.random() < 0.03:
                reason = reason.lower()
            rows["reason_code"].append(reason)
            rows["device_id"].append(unit_of.get((store, unit)) if unit else None)

        perishable = np.flatnonzero(self.perishable)
        for day in range(DAYS):
            for s, store in enumerate(self.store_ids):
                for p in rng.choice(perishable, size=rng.poisson(3 * self.store_size[s]), replace=True):
                    add(store, int(p), day, int(1 + rng.poisson(2)), "EXPIRED")
                if rng.random() < 0.05:
                    add(store, int(rng.integers(self.n_products)), day, int(1 + rng.poisson(1)), "DAMAGED")
                for unit in ("fridge", "freezer"):
                    if day in fault_days.get((store, unit), ()):
                        at_risk = [
                            i
                            for i in range(self.n_products)
                            if _CATEGORIES[str(self.product_cat[i])][3] == unit
                        ]
                        for p in rng.choice(
                            at_risk, size=min(len(at_risk), 4 + rng.poisson(5)), replace=False
                        ):
                            add(
                                store,
                                int(p),
                                min(day + 1, DAYS - 1),
                                int(2 + rng.poisson(4)),
                                "TEMP_EXCURSION",
                            )
        return self._as_contract("waste", rows)

    def quality_inspections(self) -> pa.Table:
        rng = self.rng
        fault_days = self._fault_days()
        rows = self._empty_rows("quality_inspections")
        for day in range(DAYS):
            for store in self.store_ids:
                for p in rng.choice(self.n_products, size=rng.poisson(3), replace=False):
                    unit = _CATEGORIES[str(self.product_cat[p])][3]
                    hit = unit is not None and (
                        day in fault_days.get((store, unit), ())
                        or day - 1 in fault_days.get((store, unit), ())
                    )
                    score = int(np.clip(rng.normal(88, 5) - (24 if hit else 0), 0, 100))
                    rows["inspection_id"].append(f"QI{len(rows['inspection_id']) + 1:08d}")
                    rows["store_id"].append(store)
                    rows["product_id"].append(self.product_ids[p])
                    rows["inspected_ts"].append(
                        START + dt.timedelta(days=day, hours=float(rng.uniform(7, 11)))
                    )
                    rows["score"].append(score if rng.random() > 0.01 else None)
                    rows["passed"].append(score >= 70)
                    rows["inspector"].append(f"QA-{rng.integers(1, 9)}")
        return self._as_contract("quality_inspections", rows)

    def shipments(self) -> pa.Table:
        rng = self.rng
        rows = self._empty_rows("shipments")
        for day in range(DAYS):
            for s, store in enumerate(self.store_ids):
                for p in rng.choice(
                    self.n_products, size=rng.poisson(6 * self.store_size[s]), p=self.popularity
                ):
                    shipped = START + dt.timedelta(days=day - 1, hours=float(rng.uniform(18, 23)))
                    received = shipped + dt.timedelta(hours=float(rng.uniform(6, 30)))
                    safe = _CATEGORIES[str(self.product_cat[p])][1]
                    temp = safe - rng.uniform(0.5, 3) + (rng.uniform(1, 6) if rng.random() < 0.03 else 0)
                    rows["shipment_id"].append(f"SH{len(rows['shipment_id']) + 1:08d}")
                    rows["store_id"].append(store)
                    rows["product_id"].append(self.product_ids[p])
                    rows["shipped_ts"].append(shipped)
                    rows["received_ts"].append(received if rng.random() > 0.02 else None)
                    rows["quantity"].append(int(rng.integers(6, 48)))
                    rows["carrier"].append(str(rng.choice(["ColdFreight", "ArcticLine", "FreshWay"])))
                    rows["max_transit_temp_c"].append(round(float(temp), 2))
        return self._as_contract("shipments", rows)

    def _as_contract(self, name: str, rows: dict[str, list[object]]) -> pa.Table:
        schema = self.contracts[name].arrow_schema()
        arrays = []
        for f in schema:
            values = rows[f.name]
            if pa.types.is_decimal(f.type):
                arrays.append(pa.array(values, pa.string()).cast(f.type))
            else:
                arrays.append(pa.array(values, f.type))
        return pa.Table.from_arrays(arrays, schema=schema)


TABLES = (
    "regions",
    "stores",
    "products",
    "customers",
    "devices",
    "sensor_readings",
    "orders",
    "order_lines",
    "returns",
    "waste",
    "quality_inspections",
    "shipments",
)


def generate(
    scale: float = 1.0,
    seed: int = 42,
    project: Project | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, pa.Table]:
    """Every bronze table of the reference domain (``TABLES``), by table name, shaped by the
    reference project's contracts (``project``; default: the environment's). Same inputs, same
    bytes. ``progress`` is called with each table's name once it is generated."""
    g = _Generator(scale, seed, reference_contracts(project))
    done = progress or (lambda _name: None)
    tables: dict[str, pa.Table] = {}
    for name, make in (
        ("regions", g.regions),
        ("stores", g.stores),
        ("products", g.products),
        ("customers", g.customers),
        ("devices", g.devices),
        ("sensor_readings", g.sensor_readings),
    ):
        tables[name] = make()
        done(name)
    tables["orders"], tables["order_lines"] = g.orders_and_lines()
    done("orders")
    done("order_lines")
    for name, make in (
        ("returns", g.returns),
        ("waste", g.waste),
        ("quality_inspections", g.quality_inspections),
        ("shipments", g.shipments),
    ):
        tables[name] = make()
        done(name)
    return tables


def write_files(
    tables: dict[str, pa.Table],
    out_dir: Path,
    fmt: str = "parquet",
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write each table as one file named after it; returns table name -> path. ``progress`` is
    called with each table's name once its file is written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, table in tables.items():
        if fmt == "parquet":
            path = out_dir / f"{name}.parquet"
            pq.write_table(table, path, compression="zstd")
        elif fmt == "csv":
            path = out_dir / f"{name}.csv"
            pacsv.write_csv(table, path)
        elif fmt == "jsonl":
            path = out_dir / f"{name}.jsonl"
            with path.open("w") as fh:
                for row in table.to_pylist():
                    fh.write(_json_line(row) + "\n")
        else:
            raise ValueError(f"unknown format {fmt!r}")
        paths[name] = path
        if progress:
            progress(name)
    return paths


def _json_line(row: dict[str, object]) -> str:
    import json

    return json.dumps(row, default=str, separators=(",", ":"))
