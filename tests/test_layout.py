"""The repository as a whole: the package imports without a circle, nothing
points outside the repository, and the README is an entry page whose links
resolve."""
import ast
import re

from conftest import ROOT

PACKAGE = ROOT / 'mmhire'


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path, modules):
    """The mmhire modules that ``path`` imports by name (a package's
    ``__init__`` run on the way to a submodule is no edge), and the imports
    inside functions."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    tree = ast.parse(path.read_text())
    edges, nested = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package.split('.')[:len(package.split('.'))
                                                   - node.level + 1]
                                + ([base] if base else []))
            targets = [f'{base}.{alias.name}' for alias in node.names
                       if f'{base}.{alias.name}' in modules] or [base]
        else:
            continue
        edges |= {t for t in targets if t in modules and t != name}
        if node.col_offset:
            nested.append(f'{name}:{node.lineno}')
    return edges, nested


def test_the_package_imports_without_a_circle_or_imports_in_functions():
    paths = sorted(PACKAGE.rglob('*.py'))
    modules = {module_name(p) for p in paths}
    graph, nested = {}, []
    for path in paths:
        graph[module_name(path)], inner = imports_of(path, modules)
        nested += inner
    assert nested == []
    assert graph['mmhire.checkpoint'] <= {'mmhire.errors'}  # no model

    def visit(module, trail):
        assert module not in trail, ' -> '.join(trail + [module])
        for target in graph[module]:
            visit(target, trail + [module])

    for module in graph:
        visit(module, [])


def test_nothing_points_outside_the_repository():
    tracked = [p for p in ROOT.rglob('*') if p.is_file() and not any(
        part in ('.git', '.venv', 'work_dirs', 'data', '__pycache__')
        or part.endswith('.egg-info')
        for part in p.relative_to(ROOT).parts)]
    offenders = []
    for path in tracked:
        if path.suffix not in ('.py', '.md', '.sh', '.txt', '.ini', '.cfg',
                               '') or path.name == 'setup_env.sh':
            continue  # only the set-up may take a wheel from a cache folder
        text = path.read_text(errors='ignore')
        if re.search(r'\.\./shared|[A-Z_]+_ARCHITECTURE\.md', text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def local_links(markdown):
    return [target for target in re.findall(r'\]\(([^)#\s]+)', markdown)
            if '://' not in target]


def test_readme_is_an_entry_page_and_every_local_link_resolves():
    readme = (ROOT / 'README.md').read_text()
    assert len(readme.splitlines()) <= 200
    pages = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
    assert len(pages) > 1
    for page in pages:
        for target in local_links(page.read_text()):
            assert (page.parent / target).exists(), f'{page.name}: {target}'
    linked = {(ROOT / t).resolve() for t in local_links(readme)}
    assert set(pages[1:]) <= linked  # every docs page is reachable


def test_no_message_or_page_advises_loading_without_weights_only():
    advice = re.compile(r'weights_only\W{0,3}(=|set to)\W{0,3}False')
    sources = [*ROOT.glob('*.md'), *(ROOT / 'docs').rglob('*.md'),
               *PACKAGE.rglob('*.py'), *(ROOT / 'tools').rglob('*.py'),
               *(ROOT / 'tests').rglob('*.py')]
    assert [str(p) for p in sources if advice.search(p.read_text())] == []
