"""pgvector's own Python clients (psycopg 3 and SQLAlchemy) work unchanged against vecguard."""

import numpy as np
import pytest
from pgvector.psycopg import register_vector
from pgvector.sqlalchemy import Vector
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
