from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=100)
    price_cents = models.PositiveIntegerField()
    # Nullable, so the previous release (which never writes it) keeps inserting rows.
    sku = models.CharField(max_length=32, null=True)
