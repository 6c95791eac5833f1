import asyncio, sys, pytest
@pytest.fixture(autouse=True)
async def _dump_tasks():
    loop = asyncio.get_running_loop()
    def dump():
        for t in asyncio.all_tasks(loop):
            print("TASK", t.get_name(), file=sys.stderr)
            t.print_stack(file=sys.stderr)
    h = loop.call_later(10, dump)
    yield
    h.cancel()
