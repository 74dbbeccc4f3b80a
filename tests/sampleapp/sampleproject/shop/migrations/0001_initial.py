from django.db import migrations, models


def add_items(apps, schema_editor):
    Item = apps.get_model("shop", "Item")
    Item.objects.bulk_create(Item(name=f"item-{n}", price_cents=100 * n) for n in range(1, 11))


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100)),
                ("price_cents", models.PositiveIntegerField()),
            ],
        ),
        migrations.RunPython(add_items, migrations.RunPython.noop),
    ]
