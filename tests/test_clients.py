"""pgvector's own Python clients (psycopg 3 and SQLAlchemy) work unchanged against vecguard."""

import numpy as np
import pytest
from pgvector import Bit, HalfVector, SparseVector
from pgvector.psycopg import register_vector
from pgvector.sqlalchemy import BIT, HALFVEC, SPARSEVEC, Vector
from sqlalchemy import Integer, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


def as_numpy(value):
    """pgvector-python returns numpy arrays from text and `Vector` objects from binary."""
    return value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)


def test_psycopg_register_vector_text_and_binary(cluster, dbname):
    with cluster.connect(dbname) as conn:
        register_vector(conn)
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
        rng = np.random.default_rng(3)
        data = rng.standard_normal((20, 3)).astype(np.float32)
        # text-format parameters
        for i, v in enumerate(data[:10]):
            conn.execute("INSERT INTO items VALUES (%s, %s)", (i, v))
        # binary-format parameters (vector_recv) and binary results (vector_send)
        with conn.cursor(binary=True) as cur:
            for i, v in enumerate(data[10:], start=10):
                cur.execute("INSERT INTO items VALUES (%s, %b)", (i, v))
            cur.execute("SELECT embedding FROM items ORDER BY id")
            got_binary = np.array([as_numpy(r[0]) for r in cur.fetchall()])
        got_text = np.array([as_numpy(r[0]) for r in conn.execute("SELECT embedding FROM items ORDER BY id")])
        assert got_binary.dtype == np.float32 and np.array_equal(got_binary, data)
        assert np.array_equal(got_text, data)
        # nearest neighbour through the operator with a numpy parameter
        q = data[4]
        nearest = conn.execute("SELECT id FROM items ORDER BY embedding <-> %s LIMIT 1", (q,)).fetchone()
        assert nearest == (4,)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "orm_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding = mapped_column(Vector(3))


@pytest.mark.parametrize("metric", ["l2_distance", "cosine_distance", "max_inner_product", "l1_distance"])
def test_sqlalchemy_orm(cluster, dbname, metric):
    engine = create_engine(f"postgresql+psycopg://postgres@/{dbname}?host={cluster.sockdir}&port={cluster.port}")
    Base.metadata.create_all(engine)
    vectors = {1: [1, 1, 1], 2: [2, 2, 2], 3: [1, 1, 2], 4: [-1, 0, 0.5]}
    with Session(engine) as session:
        session.query(Item).delete()
        session.add_all([Item(id=k, embedding=np.array(v)) for k, v in vectors.items()])
        session.commit()
        q = [1, 1, 1]
        dist = getattr(Item.embedding, metric)(q)
        ids = [r.id for r in session.scalars(select(Item).order_by(dist, Item.id).limit(4))]
        qn = np.array(q, dtype=np.float64)

        def ref(v):
            v = np.array(v, dtype=np.float64)
            return {"l2_distance": np.linalg.norm(v - qn),
                    "cosine_distance": 1 - v @ qn / np.linalg.norm(v) / np.linalg.norm(qn),
                    "max_inner_product": -(v @ qn),
                    "l1_distance": np.abs(v - qn).sum()}[metric]
        expected = sorted(vectors, key=lambda k: (round(ref(vectors[k]), 9), k))
        assert ids == expected
        session.expire_all()
        item = session.get(Item, 3)
        assert np.asarray(item.embedding, dtype=np.float32).tolist() == [1.0, 1.0, 2.0]
    engine.dispose()


def test_psycopg_halfvec_sparsevec_bit_text_and_binary(cluster, dbname):
    """register_vector also maps halfvec, sparsevec and bit: values go in and come back
    unchanged in both wire formats, and distances take them as parameters."""
    rows = [
        (1, HalfVector([1.5, 2.0, -3.0]), SparseVector({0: 1.5, 3: -2.0}, 5), Bit([True, False, True, True])),
        (2, HalfVector([0.25, 0.0, 1.0]), SparseVector([0, 0, 0, 0, 7.0]), Bit("0110")),
        (3, HalfVector([65504.0, -0.5, 0.0]), SparseVector({}, 5), Bit("0000")),
    ]
    with cluster.connect(dbname) as conn:
        register_vector(conn)
        conn.execute("CREATE TABLE typed_items (id int PRIMARY KEY, half halfvec(3), sparse sparsevec(5), bits bit(4))")
        conn.execute("INSERT INTO typed_items VALUES (%s, %s, %s, %s)", rows[0])
        with conn.cursor(binary=True) as cur:
            for r in rows[1:]:
                cur.execute("INSERT INTO typed_items VALUES (%s, %b, %b, %b)", r)
            cur.execute("SELECT id, half, sparse, bits FROM typed_items ORDER BY id")
            got_binary = cur.fetchall()
        got_text = conn.execute("SELECT id, half, sparse, bits FROM typed_items ORDER BY id").fetchall()
        for got in (got_binary, got_text):
            for (i, h, sp, b), (wi, wh, wsp, wb) in zip(got, rows, strict=True):
                assert i == wi
                assert h.to_list() == wh.to_list()
                assert (sp.dimensions(), sp.indices(), sp.values()) == (wsp.dimensions(), wsp.indices(), wsp.values())
                # bit is PostgreSQL's own type: psycopg returns it as text or as raw binary
                assert (Bit.from_binary(b) if isinstance(b, bytes) else Bit.from_text(b)) == wb
        q = (HalfVector([1.0, 2.0, -3.0]), SparseVector({0: 1.0}, 5), Bit("1111"))
        got = conn.execute("SELECT id, half <-> %s, sparse <-> %s, bits <~> %s, bits <%%> %s "
                           "FROM typed_items ORDER BY id", (*q, q[2])).fetchall()
        assert got[0][1:] == pytest.approx((0.5, (0.25 + 4.0) ** 0.5, 1.0, 0.25))
        assert got[2][3:] == (4.0, 1.0)


class TypedItem(Base):
    __tablename__ = "orm_typed_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    half = mapped_column(HALFVEC(3))
    sparse = mapped_column(SPARSEVEC(3))
    bits = mapped_column(BIT(3))


def test_sqlalchemy_halfvec_sparsevec_bit(cluster, dbname):
    """pgvector-python's SQLAlchemy types and their distance comparators."""
    engine = create_engine(f"postgresql+psycopg://postgres@/{dbname}?host={cluster.sockdir}&port={cluster.port}")
    Base.metadata.create_all(engine)
    vectors = {1: [1, 1, 1], 2: [2, 2, 2], 3: [1, 1, 2], 4: [-1, 0, 0.5]}
    bits = {1: "000", 2: "101", 3: "111", 4: "110"}
    with Session(engine) as session:
        session.query(TypedItem).delete()
        session.add_all([TypedItem(id=k, half=v, sparse=SparseVector(v), bits=bits[k]) for k, v in vectors.items()])
        session.commit()
        q = [1, 1, 1]
        order = lambda d: [r.id for r in session.scalars(select(TypedItem).order_by(d, TypedItem.id))]  # noqa: E731
        assert order(TypedItem.half.l2_distance(q)) == [1, 3, 2, 4]
        assert order(TypedItem.half.max_inner_product(q)) == [2, 3, 1, 4]
        assert order(TypedItem.half.cosine_distance(q)) == [1, 2, 3, 4]
        assert order(TypedItem.half.l1_distance(q)) == [1, 3, 2, 4]
        assert order(TypedItem.sparse.l2_distance(SparseVector(q))) == [1, 3, 2, 4]
        assert order(TypedItem.sparse.max_inner_product(SparseVector(q))) == [2, 3, 1, 4]
        assert order(TypedItem.bits.hamming_distance("111")) == [3, 2, 4, 1]
        assert order(TypedItem.bits.jaccard_distance("111")) == [3, 2, 4, 1]
        session.expire_all()
        item = session.get(TypedItem, 4)
        half = item.half
        assert (half.to_list() if hasattr(half, "to_list") else list(half)) == [-1.0, 0.0, 0.5]
        assert item.sparse.to_list() == [-1.0, 0.0, 0.5]
        assert item.bits == "110"
    engine.dispose()
